#!/bin/sh
# Build the sdist and a wheel of this checkout, repair the wheel to a manylinux tag, install it in a
# fresh virtualenv and check it runs with the compiled speedups. The local counterpart of
# .github/workflows/wheels.yml (which builds every CPython x architecture with cibuildwheel).
#
#   packaging/wheels/build-and-verify.sh        # needs: pip install build auditwheel; patchelf
set -eu

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=${WORK:-/var/tmp/ptproxy-wheels}
PYTHON=${PYTHON:-python3}

say() { printf '==> %s\n' "$*"; }
die() { printf 'build-and-verify: %s\n' "$*" >&2; exit 1; }

rm -rf "$WORK"
mkdir -p "$WORK/dist" "$WORK/wheelhouse"

say "python -m build (sdist, then the wheel from the sdist)"
"$PYTHON" -m build --outdir "$WORK/dist" "$ROOT" >"$WORK/build.log" 2>&1 || { tail -30 "$WORK/build.log"; die "build failed"; }
sdist=$(ls "$WORK"/dist/*.tar.gz)
wheel=$(ls "$WORK"/dist/*.whl)
printf '    %s\n    %s\n' "$(basename "$sdist")" "$(basename "$wheel")"

say "contents: Cython sources in the sdist, compiled modules in the wheel, no generated C in either"
"$PYTHON" - "$sdist" "$wheel" <<'PY'
import sys, tarfile, zipfile
sdist, wheel = sys.argv[1], sys.argv[2]
snames = tarfile.open(sdist).getnames()
wnames = zipfile.ZipFile(wheel).namelist()
for label, names in (("sdist", snames), ("wheel", wnames)):
    c_files = [n for n in names if n.endswith(".c")]
    assert not c_files, f"{label} contains generated C: {c_files}"
# One compiled module per .pyx shipped in the sdist, whatever their number.
pyx = sorted(n.rsplit("/", 1)[1][:-4] for n in snames if "_speedups/" in n and n.endswith(".pyx"))
assert {"ackpath", "ccpath", "chunked", "fieldcodec", "framing", "h3path", "quicpath", "quicrecv", "streamframes", "udpio"} <= set(pyx), f"sdist lacks Cython sources: {pyx}"
so = [n for n in wnames if n.endswith(".so")]
so_mods = sorted(n.rsplit("/", 1)[1].split(".", 1)[0] for n in so)
assert so_mods == pyx, f"wheel should hold one compiled module per .pyx {pyx}, has {so}"
print(f"    sdist: {len(snames)} entries, wheel: {len(wnames)} entries, compiled: {', '.join(so)}")
PY

say "auditwheel repair"
auditwheel repair --wheel-dir "$WORK/wheelhouse" "$wheel" >"$WORK/auditwheel.log" 2>&1 || { cat "$WORK/auditwheel.log"; die "auditwheel repair failed"; }
repaired=$(ls "$WORK"/wheelhouse/*.whl)
case $(basename "$repaired") in *manylinux*) ;; *) die "not a manylinux wheel: $repaired" ;; esac
printf '    %s\n' "$(basename "$repaired")"
printf '    %s\n' "$(auditwheel show "$repaired" | tr -s ' \n' '  ' | cut -c1-160)"

say "fresh virtualenv: pip install the repaired wheel"
"$PYTHON" -m venv "$WORK/venv"
"$WORK/venv/bin/pip" install --quiet --disable-pip-version-check "$repaired" 2>&1 | grep -v '^WARNING: Location' || true
version=$(cd "$WORK" && "$WORK/venv/bin/ptproxy" --version)
printf '    %s\n' "$version"
case $version in *"speedups: compiled"*) ;; *) die "the installed wheel does not use its compiled speedups" ;; esac
say "fresh virtualenv: ptproxy demo --once"
(cd "$WORK" && "$WORK/venv/bin/ptproxy" demo --once --http-port 0 --quic-port 0 2>&1 | grep 'demo request' | sed 's/^/    /')
say "OK: $repaired"
