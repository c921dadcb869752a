# Shared by scripts/*: pick an interpreter and make every pyenv Python visible to tox.
# Sourced, not run.

# Put each installed CPython's bin/ on PATH so tox finds python3.10 ... python3.13.
if command -v pyenv >/dev/null 2>&1; then
  for version in 3.13.0 3.12.1 3.11.7 3.10.13; do
    prefix=$(pyenv prefix "$version" 2>/dev/null) && PATH="$prefix/bin:$PATH"
  done
  export PATH
fi

# The project's own virtualenv: the newest supported Python available.
pick_python() {
  for candidate in python3.13 python3.12 python3.11 python3.10 python3; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
      command -v "$candidate"
      return 0
    fi
  done
  echo "channels_neffos needs Python >= 3.10; none found on PATH" >&2
  return 1
}

# Create .venv (once) and install the project with everything a developer uses (the dev
# extra): the tools at the versions constraints/tools.txt pins, the runtime dependencies at
# their newest releases.
ensure_venv() {
  if [ ! -x .venv/bin/python ]; then
    "$(pick_python)" -m venv .venv
  fi
  # Installed already from this very pyproject.toml and these pins, editable from this very
  # checkout: nothing to do (a reinstall takes seconds, and swaps the package under tests
  # running from .venv).
  cat pyproject.toml constraints/tools.txt >.venv/.wanted
  if cmp -s .venv/.wanted .venv/.installed-from &&
     [ "$(.venv/bin/python -c 'import channels_neffos, os; print(os.path.dirname(os.path.dirname(channels_neffos.__file__)))' 2>/dev/null)" = "$PWD" ]; then
    return 0
  fi
  # pip's output goes to a log, shown only if the install fails.
  if ! { .venv/bin/python -m pip install --upgrade pip &&
         .venv/bin/python -m pip install -c constraints/tools.txt -e ".[dev]"; } >.venv/pip.log 2>&1; then
    cat .venv/pip.log >&2
    echo "installing the development dependencies failed (log above)" >&2
    return 1
  fi
  mv .venv/.wanted .venv/.installed-from
}

# The testproject's npm packages (neffos.js for the page, ws/playwright-core for the e2e tests).
ensure_npm() {
  if ! command -v npm >/dev/null 2>&1; then
    echo "npm is needed for the neffos.js client (Debian: apt-get install npm)" >&2
    return 1
  fi
  # Installed already from this very lock file: nothing to do (npm ci would delete node_modules
  # first, under any test or demo using it, and take seconds).
  if cmp -s testproject/package-lock.json testproject/node_modules/.installed-from-lock; then
    return 0
  fi
  if ! (cd testproject && npm ci --no-audit --no-fund --loglevel=error) >.venv/npm.log 2>&1; then
    cat .venv/npm.log >&2
    echo "npm ci in testproject/ failed (log above)" >&2
    return 1
  fi
  cp testproject/package-lock.json testproject/node_modules/.installed-from-lock
}

# Headless Chromium for the browser test: Debian's package, installed if missing and possible.
ensure_chromium() {
  if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
    return 0
  fi
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing chromium (Debian package) for the browser test..."
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } \
      >.venv/apt.log 2>&1 || { cat .venv/apt.log >&2; return 1; }
  else
    echo "the browser test needs chromium: install it (Debian: apt-get install chromium)" >&2
    return 1
  fi
}
