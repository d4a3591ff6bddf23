#compdef lklfuse

autoload -U is-at-least

_lklfuse() {
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
'*-o+[Mount options, comma separated (listed below); may be repeated]:OPTIONS:_default' \
'-f[Stay in the foreground]' \
'-d[Debug\: stay in the foreground and log debug messages]' \
'-s[Serve FUSE requests on a single thread]' \
'-h[Print help]' \
'--help[Print help]' \
'-V[Print version]' \
'--version[Print version]' \
':image -- Disk image or block device:_files' \
':mountpoint -- Directory to mount on (or /dev/fd/N from mount.fuse3 -o drop_privileges):_files -/' \
&& ret=0
}

(( $+functions[_lklfuse_commands] )) ||
_lklfuse_commands() {
    local commands; commands=()
    _describe -t commands 'lklfuse commands' commands "$@"
}

if [ "$funcstack[1]" = "_lklfuse" ]; then
    _lklfuse "$@"
else
    compdef _lklfuse lklfuse
fi
