#!/bin/sh
# Usage: check-config.sh FRAGMENT DOTCONFIG - list fragment lines lost in .config
frag=$1 conf=$2 bad=0
grep -E '^(CONFIG_[A-Z0-9_]+=|# CONFIG_[A-Z0-9_]+ is not set)' "$frag" | while read -r line; do
  case $line in
    "# "*) sym=${line#\# }; sym=${sym%% *}; grep -q "^$sym=y" "$conf" && echo "still set: $sym" ;;
    *) grep -qxF "$line" "$conf" || echo "did not stick: $line" ;;
  esac
done
