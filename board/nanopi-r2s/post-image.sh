#!/bin/sh
# Buildroot post-image script of the NanoPi R2S: extlinux.conf for U-Boot,
# then the SD card image (sdcard.img) with genimage.
#   $1  the images directory (Buildroot passes it)
set -eu
images=$1
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$images/extlinux"
cp "$here/extlinux.conf" "$images/extlinux/extlinux.conf"
exec support/scripts/genimage.sh -c "$here/genimage.cfg"
