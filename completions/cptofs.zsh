#compdef cptofs

autoload -U is-at-least

_cptofs() {
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
'-s+[SELinux context to set on everything copied in]:CONTEXT:_default' \
'--selinux=[SELinux context to set on everything copied in]:CONTEXT:_default' \
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
'*::paths -- Host files or directories, then the destination inside the image:_files' \
&& ret=0
}

(( $+functions[_cptofs_commands] )) ||
_cptofs_commands() {
    local commands; commands=()
    _describe -t commands 'cptofs commands' commands "$@"
}

if [ "$funcstack[1]" = "_cptofs" ]; then
    _cptofs "$@"
else
    compdef _cptofs cptofs
fi
