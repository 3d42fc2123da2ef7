#!/bin/sh
# Captures real md/mdadm outputs. Every capture is a file under $CAP; at the
# end each is printed base64-encoded so whitespace survives the serial line.
CAP=/tmp/cap
mkdir -p $CAP
log() { echo "LOG: $*"; }
# run NAME CMD...: stdout, stderr, exit code of a command
run() { n=$1; shift; "$@" > $CAP/$n.stdout 2> $CAP/$n.stderr; echo $? > $CAP/$n.rc; log "$n rc=$(cat $CAP/$n.rc) $(head -c 300 $CAP/$n.stderr | tr '\n' ' ')"; }
snap() { cat /proc/mdstat > $CAP/$1.mdstat; }
# sysdump NAME MD: every readable md attribute, path=value (value newlines as \n)
sysdump() {
  out=$CAP/$1.sysfs; : > $out
  for f in /sys/block/$2/md/* /sys/block/$2/md/dev-*/* /sys/block/$2/md/bitmap/*; do
    [ -f "$f" ] || continue
    case "$f" in */new_dev) continue;; esac
    v=$(cat "$f" 2>&1; echo x); v=${v%x}
    printf '%s=%s\n' "${f#/sys/block/}" "$(printf '%s' "$v" | sed ':a;N;$!ba;s/\n/\\n/g')" >> $out
  done
  ls -la /sys/block/$2/md/ > $CAP/$1.ls 2>&1
}
waitidle() { # MD
  i=0; while [ "$(cat /sys/block/$1/md/sync_action 2>/dev/null)" != idle ] && [ $i -lt 600 ]; do sleep 0.2; i=$((i+1)); done
}
slow() { echo 1 > /proc/sys/dev/raid/speed_limit_min; echo ${1:-300} > /proc/sys/dev/raid/speed_limit_max; }
fast() { echo 1000 > /proc/sys/dev/raid/speed_limit_min; echo 2000000 > /proc/sys/dev/raid/speed_limit_max; }

snap 00-empty

# --- NVMe/TCP loopback targets backed by loop devices ---
HOSTNQN=nqn.2014-08.org.nvmexpress:uuid:$(cat /proc/sys/kernel/random/uuid)
HOSTID=$(cat /proc/sys/kernel/random/uuid)
cd /sys/kernel/config/nvmet || exit 1
mkdir ports/1
echo tcp > ports/1/addr_trtype; echo ipv4 > ports/1/addr_adrfam
echo 127.0.0.1 > ports/1/addr_traddr; echo 4420 > ports/1/addr_trsvcid
for i in 1 2 3 4; do
  truncate -s 40M /tmp/r$i.img
  losetup /dev/loop$i /tmp/r$i.img || log "losetup loop$i failed"
  nqn=nqn.2024-01.io.nvmirror:replica$i
  mkdir subsystems/$nqn
  echo 1 > subsystems/$nqn/attr_allow_any_host
  mkdir subsystems/$nqn/namespaces/1
  echo /dev/loop$i > subsystems/$nqn/namespaces/1/device_path
  cat /proc/sys/kernel/random/uuid > subsystems/$nqn/namespaces/1/device_uuid
  echo 1 > subsystems/$nqn/namespaces/1/enable || log "enable ns $i failed"
  ln -s /sys/kernel/config/nvmet/subsystems/$nqn ports/1/subsystems/$nqn
  echo "transport=tcp,traddr=127.0.0.1,trsvcid=4420,nqn=$nqn,hostnqn=$HOSTNQN,hostid=$HOSTID,ctrl_loss_tmo=5,reconnect_delay=1,fast_io_fail_tmo=1" > /dev/nvme-fabrics || log "connect $i failed"
done
cd /
sleep 2
nsdev() { for s in /sys/class/nvme-subsystem/nvme-subsys*; do
  if [ "$(cat $s/subsysnqn)" = "$1" ]; then for d in $s/nvme*n*; do [ -e "$d" ] && basename $d && return; done; fi; done; }
D1=$(nsdev nqn.2024-01.io.nvmirror:replica1); D2=$(nsdev nqn.2024-01.io.nvmirror:replica2)
D3=$(nsdev nqn.2024-01.io.nvmirror:replica3); D4=$(nsdev nqn.2024-01.io.nvmirror:replica4)
log "nvme devices: $D1 $D2 $D3 $D4"
ls /sys/block > $CAP/01-sysblock.ls

run 02-examine-nosb mdadm --examine --export /dev/$D1
run 02-examine-nodev mdadm --examine --export /dev/nvme9n9
run 02-create-one mdadm --create /dev/md100 --run --metadata=1.2 --level=1 --raid-devices=1 --bitmap=internal /dev/$D4

# --- main RAID1 over NVMe/TCP, as Manager.Create builds it ---
run 10-create mdadm --create /dev/md127 --run --metadata=1.2 --level=1 --raid-devices=3 --bitmap=internal --bitmap-chunk=1024K --failfast --homehost=any --name=vol-a --assume-clean /dev/$D1 /dev/$D2 /dev/$D3
snap 10-clean; sysdump 10-clean md127
run 10-detail mdadm --detail --export /dev/md127
run 10-examine mdadm --examine --export /dev/$D1
run 10-detail-md99 mdadm --detail --export /dev/md99
run 10-stop-md99 mdadm --stop /dev/md99
run 10-remove-active mdadm /dev/md127 --remove /dev/$D1
dd if=/dev/urandom of=/dev/md127 bs=64k count=16 oflag=direct 2>/dev/null

run 11-fail mdadm /dev/md127 --fail /dev/$D3
snap 11-failed; sysdump 11-failed md127
run 11-detail mdadm --detail --export /dev/md127
run 12-remove-failed mdadm /dev/md127 --remove failed
snap 12-removed; sysdump 12-removed md127
run 12-remove-failed-again mdadm /dev/md127 --remove failed
dd if=/dev/urandom of=/dev/md127 bs=64k count=16 seek=100 oflag=direct 2>/dev/null
run 13-readd mdadm /dev/md127 --re-add /dev/$D3
snap 13-readded; sysdump 13-readded md127
waitidle md127
run 13-readd-never-member mdadm /dev/md127 --re-add /dev/$D4
run 13-examine-d3 mdadm --examine --export /dev/$D3

# full recovery of a wiped member, slowed down to catch it in progress
slow 300
run 14-fail-d2 mdadm /dev/md127 --fail /dev/$D2
run 14-remove-d2 mdadm /dev/md127 --remove /dev/$D2
run 14-zero-d2 mdadm --zero-superblock /dev/$D2
run 14-add-d2 mdadm /dev/md127 --add --failfast /dev/$D2
sleep 3
snap 14-recovery; sysdump 14-recovery md127
run 14-detail mdadm --detail --export /dev/md127
run 14-stop-busy-open sh -c 'exec 3</dev/md127; mdadm --stop /dev/md127'
fast; waitidle md127
snap 14-recovered; sysdump 14-recovered md127

# check, slowed down
slow 300
echo check > /sys/block/md127/md/sync_action
sleep 3
snap 15-check; sysdump 15-check md127
fast; waitidle md127
sysdump 15-checked md127

# spare
run 16-add-spare mdadm /dev/md127 --add --failfast /dev/$D4
snap 16-spare; sysdump 16-spare md127
run 16-fail-kernel-name mdadm /dev/md127 --fail $D4
snap 16-failed-spare; sysdump 16-failed-spare md127
run 16-remove-kernel-name mdadm /dev/md127 --remove $D4

# --- ram disks: other levels, write-mostly, delayed, pending, inactive ---
run 20-create-wm mdadm --create /dev/md126 --run --metadata=1.2 --level=1 --raid-devices=2 --bitmap=internal --assume-clean /dev/ram0 --write-mostly /dev/ram1
run 20-create-raid0 mdadm --create /dev/md125 --run --metadata=1.2 --level=0 --raid-devices=2 /dev/ram2 /dev/ram3
run 20-create-raid10 mdadm --create /dev/md124 --run --metadata=1.2 --level=10 --raid-devices=4 --assume-clean /dev/ram4 /dev/ram5 /dev/ram6 /dev/ram7
snap 20-levels; sysdump 20-raid0 md125; sysdump 20-raid10 md124; sysdump 20-wm md126
run 20-detail-raid0 mdadm --detail --export /dev/md125
run 20-stop-busy sh -c 'exec 3</dev/md125; mdadm --stop /dev/md125'
run 21-fail-wm0 mdadm /dev/md126 --fail /dev/ram0
run 21-fail-last mdadm /dev/md126 --fail /dev/ram1
snap 21-fail-last; sysdump 21-fail-last md126
run 21-stop-wm mdadm --stop /dev/md126
run 21-stop-wm-again mdadm --stop /dev/md126

# resync DELAYED: two arrays on partitions of the same two disks
truncate -s 64M /tmp/p5.img; truncate -s 64M /tmp/p6.img
losetup -P /dev/loop5 /tmp/p5.img; losetup -P /dev/loop6 /tmp/p6.img
for l in loop5 loop6; do printf 'o\nn\np\n1\n\n+24M\nn\np\n2\n\n+24M\nw\n' | fdisk /dev/$l > /dev/null 2>&1; done
sleep 1
ls /dev/loop5* /dev/loop6* > $CAP/30-parts.ls 2>&1
slow 200
run 30-create-a mdadm --create /dev/md123 --run --metadata=1.2 --level=1 --raid-devices=2 --bitmap=internal /dev/loop5p1 /dev/loop6p1
run 30-create-b mdadm --create /dev/md122 --run --metadata=1.2 --level=1 --raid-devices=2 --bitmap=internal /dev/loop5p2 /dev/loop6p2
sleep 3
snap 30-delayed; sysdump 30-delayed-a md123; sysdump 30-delayed-b md122
# resync PENDING: stop mid-resync, reassemble auto-read-only
run 31-stop-b mdadm --stop /dev/md122
echo 1 > /sys/module/md_mod/parameters/start_ro
run 31-assemble-b mdadm --assemble /dev/md122 /dev/loop5p2 /dev/loop6p2
snap 31-pending; sysdump 31-pending md122
echo 0 > /sys/module/md_mod/parameters/start_ro
fast; waitidle md123
run 31-stop-a mdadm --stop /dev/md123
run 31-stop-b2 mdadm --stop /dev/md122

# inactive: incremental assembly of one member of two
UUID124=$(cat /sys/block/md124/md/uuid)
run 40-stop-raid10 mdadm --stop /dev/md124
echo 'AUTO +all' > /tmp/auto.conf
run 40-incremental mdadm --incremental --config=/tmp/auto.conf /dev/ram4
snap 40-inactive
for d in /sys/block/md*; do n=$(basename $d); sysdump 40-inactive-$n $n; done
run 40-examine-ram4 mdadm --examine --export /dev/ram4
INACT=$(awk '/inactive/ {print $1}' /proc/mdstat | head -1)
log "inactive array: $INACT"
run 40-detail-inactive mdadm --detail --export /dev/$INACT
run 41-assemble-busy mdadm --assemble /dev/md110 --uuid=$UUID124 --run /dev/ram4 /dev/ram5 /dev/ram6 /dev/ram7
run 41-stop-inactive mdadm --stop /dev/$INACT
run 41-assemble-wronguuid mdadm --assemble /dev/md110 --uuid=00000000:00000000:00000000:00000001 --run /dev/ram4 /dev/ram5
run 41-assemble-nosb mdadm --assemble /dev/md110 --uuid=00000000:00000000:00000000:00000001 --run /dev/ram8
run 41-assemble-two-of-four mdadm --assemble /dev/md110 --uuid=$UUID124 --run /dev/ram4 /dev/ram6
snap 41-two-of-four
run 41-stop-110 mdadm --stop /dev/md110
run 42-assemble-ok mdadm --assemble /dev/md110 --uuid=$UUID124 --run /dev/ram4 /dev/ram5 /dev/ram6 /dev/ram7
run 42-assemble-again mdadm --assemble /dev/md109 --uuid=$UUID124 --run /dev/ram4 /dev/ram5 /dev/ram6 /dev/ram7
run 42-assemble-same mdadm --assemble /dev/md110 --uuid=$UUID124 --run /dev/ram4 /dev/ram5 /dev/ram6 /dev/ram7
snap 42-final
run 42-stop-110 mdadm --stop /dev/md110
run 43-create-busy mdadm --create /dev/md127 --run --metadata=1.2 --level=1 --raid-devices=2 --bitmap=internal /dev/ram4 /dev/ram5
run 43-create-member-busy mdadm --create /dev/md108 --run --metadata=1.2 --level=1 --raid-devices=2 --bitmap=internal /dev/$D1 /dev/ram9
run 43-grow mdadm --grow /dev/md127 --size=max

# --- a replica's target goes away: md fails it on the next write ---
NQN3=nqn.2024-01.io.nvmirror:replica3
rm /sys/kernel/config/nvmet/ports/1/subsystems/$NQN3
sleep 8
dd if=/dev/urandom of=/dev/md127 bs=64k count=4 seek=200 oflag=direct 2>/dev/null
sleep 1
ls /sys/block > $CAP/44-sysblock-after-loss.ls
for c in /sys/class/nvme/nvme*; do echo "$(basename $c) $(cat $c/state 2>&1) $(cat $c/subsysnqn 2>&1)"; done > $CAP/44-ctrl-states.txt
snap 44-target-lost; sysdump 44-target-lost md127
run 44-detail mdadm --detail --export /dev/md127
run 44-fail-detached mdadm /dev/md127 --fail detached
run 44-remove-detached mdadm /dev/md127 --remove detached
snap 44-removed-detached; sysdump 44-removed-detached md127

# --- the package's own API and watcher, on ram8..ram11 ---
/nvmirror/bin/mdcap-guest > $CAP/50-go.stdout 2> $CAP/50-go.stderr; echo $? > $CAP/50-go.rc
cat $CAP/50-go.stdout
snap 50-after-go

echo "@@CAPTURE-BEGIN@@"
for f in $CAP/*; do echo "@@CAP $(basename $f) $(base64 -w0 < $f)"; done
echo "@@CAPTURE-END@@"
