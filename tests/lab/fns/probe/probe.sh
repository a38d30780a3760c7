#!/bin/sh
# The lab's probe function: the event names what to report.
#   cpus    online CPUs and the per-CPU tick counts from /proc/stat
#   random  16 bytes from /dev/urandom, in hex
#   uptime  the guest's uptime and boot id
#   oncpu N the CPU a process pinned to CPU N ran on
#   sleep N sleep N seconds, then say so
#   whoami  the handler's uid, gid and groups
#   echo    the event back
read -r what arg
case $what in
oncpu) echo "cpu=$(taskset -c "$arg" cut -d' ' -f39 /proc/self/stat)" ;;
cpus) echo "nproc=$(nproc) online=$(cat /sys/devices/system/cpu/online)"; grep '^cpu[0-9]' /proc/stat ;;
random) echo "random=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')" ;;
uptime) echo "uptime=$(cut -d' ' -f1 /proc/uptime) boot_id=$(cat /proc/sys/kernel/random/boot_id)" ;;
sleep) sleep "$arg"; echo "slept $arg" ;;
whoami) echo "uid=$(id -u) gid=$(id -g) groups=$(id -G)" ;;
*) echo "echo=$what" ;;
esac
