complete -c lklfuse -s o -d 'Mount options, comma separated (listed below); may be repeated' -r
complete -c lklfuse -s f -d 'Stay in the foreground'
complete -c lklfuse -s d -d 'Debug: stay in the foreground and log debug messages'
complete -c lklfuse -s s -d 'Serve FUSE requests on a single thread'
complete -c lklfuse -s h -l help -d 'Print help'
complete -c lklfuse -s V -l version -d 'Print version'
