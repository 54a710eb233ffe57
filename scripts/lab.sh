#!/usr/bin/env bash
# make lab: JupyterLab on 127.0.0.1 with the TensorFlow (Docker) kernels in its launcher.
#
# Installs a tfenv kernelspec for each TensorFlow -jupyter image into the venv's sys-prefix
# (`jupyter tfenv install --sys-prefix`), copies the example notebooks into artifacts/lab/ (the
# repository's copies stay clean; copies you already edited there are kept), and runs JupyterLab
# there in the foreground. Ctrl-C stops it, and it shuts its kernels and containers down.
#
# Settings (environment):
#   TFENV_LAB_PORT    port on 127.0.0.1 (default 8888); the start fails if it is taken
#   TFENV_LAB_IMAGES  space-separated images to install kernels for (default: the TF -jupyter
#                     test images of scripts/devenv.py, or the official tags with
#                     TFENV_TEST_IMAGES=official)
#   JUPYTER_TOKEN     the token to use (default: a random one, printed in the URL)
#   TFENV_OWNER_LABEL owner label value of the kernel containers (default: the product's)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
py="$repo/.venv/bin/python"
tfenv="$repo/.venv/bin/jupyter-tfenv"
if [[ ! -x "$py" || ! -x "$tfenv" ]]; then
    echo "lab.sh: $tfenv is missing; run \`make setup\` (or \`make lab\`, which runs it)" >&2
    exit 1
fi

port="${TFENV_LAB_PORT:-8888}"
if ! [[ "$port" =~ ^[0-9]+$ ]] || (( port < 1 || port > 65535 )); then
    echo "lab.sh: TFENV_LAB_PORT=$port is not a port number (1-65535)" >&2
    exit 1
fi
# port_retries=0 below makes Jupyter fail on a taken port instead of moving to another one,
# which would make the URL printed here wrong; say so before it starts.
if ! "$py" -c 'import socket, sys; socket.create_server(("127.0.0.1", int(sys.argv[1]))).close()' \
    "$port" 2>/dev/null; then
    echo "lab.sh: port $port on 127.0.0.1 is in use; pick another: TFENV_LAB_PORT=8899 make lab" >&2
    exit 1
fi

if [[ -n "${TFENV_LAB_IMAGES:-}" ]]; then
    images="$TFENV_LAB_IMAGES"
else
    # The same names the tests and the demo use (local stand-ins, or the official tags).
    images="$("$py" - <<'EOF'
import importlib.util
import sys

spec = importlib.util.spec_from_file_location("tfenv_devenv", "scripts/devenv.py")
devenv = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = devenv
spec.loader.exec_module(devenv)
mode = devenv.images_mode()
print(" ".join(devenv.image_name(key, mode) for key in ("tf-jupyter", "tf-alt-jupyter")))
EOF
)"
fi

for image in $images; do
    "$tfenv" install --sys-prefix --image "$image"
done

root="$repo/artifacts/lab"
mkdir -p "$root"
for notebook in "$repo"/examples/*.ipynb; do
    [[ -e "$notebook" ]] && cp -n "$notebook" "$root/"
done

token="${JUPYTER_TOKEN:-$("$py" -c 'import secrets; print(secrets.token_hex(24))')}"
args=(
    --ServerApp.ip=127.0.0.1
    "--ServerApp.port=$port"
    --ServerApp.port_retries=0
    --ServerApp.open_browser=False
    "--ServerApp.root_dir=$root"
    "--IdentityProvider.token=$token"
    # Offline-safe: no news feed and no update check against the internet.
    --LabApp.news_url=None
    --LabApp.check_for_updates_class=jupyterlab.handlers.announcements.NeverCheckForUpdate
)
if [[ "$(id -u)" == 0 ]]; then
    args+=(--allow-root)
fi

echo
echo "JupyterLab: http://127.0.0.1:$port/lab?token=$token"
echo "  notebooks: $root (copies of examples/)"
echo "  stop with Ctrl-C"
echo
exec "$py" -m jupyterlab "${args[@]}"
