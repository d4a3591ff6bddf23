complete -c cptofs -s i -l image -d 'The disk image' -r -F
complete -c cptofs -s t -l type -d 'Filesystem type (ext4, xfs, btrfs, vfat, exfat, ...); detected when omitted' -r
complete -c cptofs -s P -l partition -d 'Partition number (1-based, MBR or GPT); the whole image when omitted' -r
complete -c cptofs -s o -l options -d 'Filesystem mount options, comma separated' -r
complete -c cptofs -s m -l memory -d 'Kernel memory in MiB' -r
complete -c cptofs -s s -l selinux -d 'SELinux context to set on everything copied in' -r
complete -c cptofs -s p -l print-kernel -d 'Show the kernel\'s messages on stderr'
complete -c cptofs -s q -l quiet -d 'No progress bar and only errors'
complete -c cptofs -s v -l verbose -d 'List what is copied (-vv: debug messages)'
complete -c cptofs -s a -l archive -d 'Keep owners, modes, times, xattrs and ACLs'
complete -c cptofs -s h -l help -d 'Print help'
complete -c cptofs -s V -l version -d 'Print version'
