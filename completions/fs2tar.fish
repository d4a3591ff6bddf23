complete -c fs2tar -s i -l image -d 'The disk image' -r -F
complete -c fs2tar -s t -l type -d 'Filesystem type (ext4, xfs, btrfs, vfat, exfat, ...); detected when omitted' -r
complete -c fs2tar -s P -l partition -d 'Partition number (1-based, MBR or GPT); the whole image when omitted' -r
complete -c fs2tar -s o -l options -d 'Filesystem mount options, comma separated' -r
complete -c fs2tar -s m -l memory -d 'Kernel memory in MiB' -r
complete -c fs2tar -s C -l directory -d 'Archive only this directory inside the image' -r -F
complete -c fs2tar -s f -l file -d 'Output file; `-` (the default) is standard output' -r -F
complete -c fs2tar -s p -l print-kernel -d 'Show the kernel\'s messages on stderr'
complete -c fs2tar -s q -l quiet -d 'No progress bar and only errors'
complete -c fs2tar -s v -l verbose -d 'List what is copied (-vv: debug messages)'
complete -c fs2tar -s h -l help -d 'Print help'
complete -c fs2tar -s V -l version -d 'Print version'
