#compdef cpfromfs

autoload -U is-at-least

_cpfromfs() {
    typeset -A opt_args
    typeset -a _arguments_options
    local ret=1

    if is-at-least 5.2; then
        _arguments_options=(-s -S -C)
    else
        _arguments_options=(-s -C)
    fi

    local context curcontext="$curcontext" state line
    _arguments "${_arguments_options[@]}" : \
'-i+[The disk image]:IMAGE:_files' \
'--image=[The disk image]:IMAGE:_files' \
'-t+[Filesystem type (ext4, xfs, btrfs, vfat, exfat, ...); detected when omitted]:TYPE:_default' \
'--type=[Filesystem type (ext4, xfs, btrfs, vfat, exfat, ...); detected when omitted]:TYPE:_default' \
'-P+[Partition number (1-based, MBR or GPT); the whole image when omitted]:PART:_default' \
'--partition=[Partition number (1-based, MBR or GPT); the whole image when omitted]:PART:_default' \
'-o+[Filesystem mount options, comma separated]:OPTS:_default' \
'--options=[Filesystem mount options, comma separated]:OPTS:_default' \
'-m+[Kernel memory in MiB]:MB:_default' \
'--memory=[Kernel memory in MiB]:MB:_default' \
'-s+[Accepted for symmetry with cptofs; labels are copied as xattrs with -a]:CONTEXT:_default' \
'--selinux=[Accepted for symmetry with cptofs; labels are copied as xattrs with -a]:CONTEXT:_default' \
'-p[Show the kernel'\''s messages on stderr]' \
'--print-kernel[Show the kernel'\''s messages on stderr]' \
'-q[No progress bar and only errors]' \
'--quiet[No progress bar and only errors]' \
'*-v[List what is copied (-vv\: debug messages)]' \
'*--verbose[List what is copied (-vv\: debug messages)]' \
'-a[Keep owners, modes, times, xattrs and ACLs]' \
'--archive[Keep owners, modes, times, xattrs and ACLs]' \
'-h[Print help]' \
'--help[Print help]' \
'-V[Print version]' \
'--version[Print version]' \
'*::paths -- Paths inside the image, then the host destination:_files' \
&& ret=0
}

(( $+functions[_cpfromfs_commands] )) ||
_cpfromfs_commands() {
    local commands; commands=()
    _describe -t commands 'cpfromfs commands' commands "$@"
}

if [ "$funcstack[1]" = "_cpfromfs" ]; then
    _cpfromfs "$@"
else
    compdef _cpfromfs cpfromfs
fi
