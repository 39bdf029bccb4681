#!/usr/bin/env bash
# Builds the real-audio talk-off corpus for tests/talkoff_corpus.rs from pinned
# Debian packages: recorded speech (many languages and voices), music and sound
# effects, none of which contains DTMF. Nothing here is committed: the packages
# and the converted audio live in the cache directory, outside the repository.
#
#   bash benches/talkoff-corpus.sh            # fetch (if needed) and convert
#   POUND_CORPUS_DIR=/somewhere bash benches/talkoff-corpus.sh
#
# Result: $POUND_CORPUS_DIR/{speech,music,effects}/<source>.wav, 8 kHz mono
# 16-bit, each the clips of one source (a package's language or voice, or a
# package's music) in file-name order, band-limited to the telephone band
# (300-3400 Hz) and joined with 250 ms of silence; and manifest.tsv listing
# class, source, package and seconds. Levels are left as recorded: the test
# scales every source to -10, -20 and -30 dBm0 itself.
#
# Needs apt-get (with a reachable Debian 12 mirror), dpkg-deb and sox with
# libsox-fmt-all. Downloads about 1.1 GB once (kept in $POUND_CORPUS_DIR/debs);
# converting takes a few minutes on two cores.
set -euo pipefail

dir=${POUND_CORPUS_DIR:-$HOME/.cache/pound/talkoff}
debs=$dir/debs
tree=$dir/tree
mkdir -p "$debs" "$tree"

# Pinned: Debian 12 (bookworm) main. A new version would silently change the
# corpus, so a missing one is an error, not an upgrade.
packages=(
    fillets-ng-data=1.0.1-1.1
    fillets-ng-data-cs=1.0.1-1.1
    fillets-ng-data-nl=1.0.1-1.1
    klettres-data=4:22.12.3-1
    ktuberling-data=4:22.12.3-1
    hedgewars-data=1.0.2-6
    warmux-data=1:11.04.1+repack2-4
    codec2-examples=1.0.5-1
    supertux-data=0.6.3-2
    freedroidrpg-data=1.0-1
    wesnoth-1.16-music=1:1.16.9-1
    frozen-bubble-data=2.212-11
    lugaru-data=1.2-6
)

command -v sox >/dev/null || { echo "sox is missing: apt-get install -y sox libsox-fmt-all" >&2; exit 1; }

# The script's own hash: converted audio from another version of it is stale.
stamp=$(sha256sum "$0" | cut -c1-16)
if [ "$(cat "$dir/stamp" 2>/dev/null)" != "$stamp" ]; then
    rm -rf "$dir/speech" "$dir/music" "$dir/effects" "$dir/manifest.tsv"
fi

for pin in "${packages[@]}"; do
    name=${pin%%=*}
    version=${pin#*=}
    file_version=${version//:/%3a}
    if ! ls "$debs/${name}_${file_version}_"*.deb >/dev/null 2>&1; then
        (cd "$debs" && apt-get download -q "$pin")
    fi
    if [ ! -e "$tree/$name/.extracted" ]; then
        rm -rf "${tree:?}/$name"
        mkdir -p "$tree/$name"
        dpkg-deb -x "$debs/${name}_${file_version}_"*.deb "$tree/$name"
        touch "$tree/$name/.extracted"
    fi
done

# One line per source: class, source name, package, directory inside the
# package, how deep to look (1: that directory only, 9: everything below), and
# a file name to leave out (a clip that repeats others), if any.
sources() {
    local klettres=usr/share/klettres ktuberling=usr/share/ktuberling/sounds
    local hedgewars=usr/share/games/hedgewars/Data/Sounds
    echo "speech fillets-cs fillets-ng-data-cs usr/share/games/fillets-ng/sound 9"
    echo "speech fillets-nl fillets-ng-data-nl usr/share/games/fillets-ng/sound 9"
    for lang in "$tree/klettres-data/$klettres"/*/; do
        lang=$(basename "$lang")
        case $lang in icons | pics) continue ;; esac
        echo "speech klettres-$lang klettres-data $klettres/$lang 9"
    done
    for lang in "$tree/ktuberling-data/$ktuberling"/*/; do
        lang=$(basename "$lang")
        # sr@latin and the like repeat sr's recordings.
        case $lang in *@*) continue ;; esac
        echo "speech ktuberling-$lang ktuberling-data $ktuberling/$lang 9"
    done
    for voice in "$tree/hedgewars-data/$hedgewars/voices"/*/; do
        voice=$(basename "$voice")
        echo "speech hedgewars-$voice hedgewars-data $hedgewars/voices/$voice 9"
    done
    echo "speech warmux-voices warmux-data usr/share/games/warmux/sound/default/voices 9"
    echo "speech codec2-speakers codec2-examples usr/share/codec2/wav 9 all.wav"
    echo "speech supertux-speech supertux-data usr/share/games/supertux2/speech 9"
    echo "speech freedroidrpg-voices freedroidrpg-data usr/share/freedroidrpg/data/sound/effects/bot_sounds/voice_samples 9"
    echo "music wesnoth wesnoth-1.16-music usr/share/games/wesnoth/1.16/data/core/music 9"
    echo "music fillets fillets-ng-data usr/share/games/fillets-ng/music 9"
    echo "music frozen-bubble frozen-bubble-data usr/share/games/frozen-bubble/snd 1"
    echo "effects hedgewars hedgewars-data $hedgewars 1"
    echo "effects warmux warmux-data usr/share/games/warmux/sound/default/weapons 9"
    echo "effects warmux-misc warmux-data usr/share/games/warmux/sound/default/misc 9"
    echo "effects lugaru lugaru-data usr/share/games/lugaru/Sounds 9"
    echo "effects supertux supertux-data usr/share/games/supertux2/sounds 9"
    echo "effects fillets fillets-ng-data usr/share/games/fillets-ng/sound 9"
}

# Converts one source's clips into one WAV; silent clips (sox reports no
# length) are skipped.
convert() {
    local class=$1 source=$2 package=$3 path=$4 depth=$5 skip=${6:-}
    local out=$dir/$class/$source.wav
    [ -e "$out" ] && return 0
    mkdir -p "$dir/$class"
    local raw gap
    raw=$(mktemp "$dir/$class/.$source.XXXXXX")
    gap=$(mktemp)
    head -c 4000 /dev/zero >"$gap"
    find "$tree/$package/$path" -maxdepth "$depth" -type f \
        \( -iname '*.ogg' -o -iname '*.wav' -o -iname '*.flac' -o -iname '*.mp3' \) ! -name "${skip:-/}" -print0 |
        sort -z |
        while IFS= read -r -d '' clip; do
            sox -D -R "$clip" -t raw -e signed -b 16 -c 1 - remix - gain -3 rate -v 8000 sinc 300-3400 2>/dev/null >>"$raw" || true
            cat "$gap" >>"$raw"
        done
    rm -f "$gap"
    sox -D -R -t raw -e signed -b 16 -c 1 -r 8000 "$raw" "$out.part.wav"
    rm -f "$raw"
    mv "$out.part.wav" "$out"
}
export -f convert
export dir tree

sources | xargs -P "$(nproc)" -L 1 bash -c 'convert "$@"' _

{
    printf 'class\tsource\tpackage\tseconds\n'
    sources | while read -r class source package _; do
        printf '%s\t%s\t%s\t%.1f\n' "$class" "$source" "$package" "$(soxi -D "$dir/$class/$source.wav")"
    done
} >"$dir/manifest.tsv"
echo "$stamp" >"$dir/stamp"

awk -F'\t' 'NR > 1 { s[$1] += $4; n[$1]++ } END { for (c in s) printf "%-8s %3d sources %7.1f min\n", c, n[c], s[c] / 60 }' \
    "$dir/manifest.tsv" | sort
echo "corpus in $dir"
