#!/usr/bin/env bash
# Rebuild the prebuilt JupyterLab extension into jupyter_tfenv/labextension/ (committed, so
# installing jupyter-tfenv needs no Node.js). Needs Node.js >= 18 and a Python environment with
# jupyterlab (jlpm and `jupyter labextension build` come from it).
#
#   scripts/build_labextension.sh          production build (what gets committed)
#   scripts/build_labextension.sh --dev    development build, with source maps
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Prefer the project's virtual environment, so jlpm and jupyter match its JupyterLab.
if [[ -x "$root/.venv/bin/jlpm" ]]; then
    export PATH="$root/.venv/bin:$PATH"
fi
for tool in node jlpm jupyter; do
    if ! command -v "$tool" >/dev/null; then
        echo "build_labextension: '$tool' not found. Install Node.js >= 18 and" \
            "'pip install jupyterlab>=4.6' (or create .venv)." >&2
        exit 1
    fi
done

cd "$root/labextension"
# --immutable: the committed yarn.lock must already describe every dependency.
jlpm install --immutable
if [[ "${1:-}" == "--dev" ]]; then
    jlpm build
else
    jlpm build:prod
fi

python_version="$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$root/jupyter_tfenv/_version.py")"
npm_version="$(node -p "require('./package.json').version")"
if [[ "$python_version" != "$npm_version" ]]; then
    echo "build_labextension: labextension/package.json is $npm_version but" \
        "jupyter_tfenv/_version.py is $python_version; make them equal." >&2
    exit 1
fi
echo "Built jupyter-tfenv $npm_version into jupyter_tfenv/labextension/"
