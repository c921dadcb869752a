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

# Create .venv (once) and install the project with its test dependencies.
ensure_venv() {
  if [ ! -x .venv/bin/python ]; then
    "$(pick_python)" -m venv .venv
  fi
  # pip's output goes to a log, shown only if the install fails.
  if ! { .venv/bin/python -m pip install --upgrade pip &&
         .venv/bin/python -m pip install -e ".[test]"; } >.venv/pip.log 2>&1; then
    cat .venv/pip.log >&2
    echo "installing the test dependencies failed (log above)" >&2
    return 1
  fi
}
