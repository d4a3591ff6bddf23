complete -c cpfromfs -s i -l image -d 'The disk image' -r -F
complete -c cpfromfs -s t -l type -d 'Filesystem type (ext4, xfs, btrfs, vfat, exfat, ...); detected when omitted' -r
complete -c cpfromfs -s P -l partition -d 'Partition number (1-based, MBR or GPT); the whole image when omitted' -r
complete -c cpfromfs -s o -l options -d 'Filesystem mount options, comma separated' -r
complete -c cpfromfs -s m -l memory -d 'Kernel memory in MiB' -r
complete -c cpfromfs -s s -l selinux -d 'Accepted for symmetry with cptofs; labels are copied as xattrs with -a' -r
complete -c cpfromfs -s p -l print-kernel -d 'Show the kernel\'s messages on stderr'
complete -c cpfromfs -s q -l quiet -d 'No progress bar and only errors'
complete -c cpfromfs -s v -l verbose -d 'List what is copied (-vv: debug messages)'
complete -c cpfromfs -s a -l archive -d 'Keep owners, modes, times, xattrs and ACLs'
complete -c cpfromfs -s h -l help -d 'Print help'
complete -c cpfromfs -s V -l version -d 'Print version'
