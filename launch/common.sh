# Helpers the shell launchers share; sourced, not run.

# One error line naming the launcher, a pointer to its --help, exit status 2.
die() {
  local name="${0##*/}"
  echo "$name: error: $*" >&2
  echo "Run launch/$name --help for usage." >&2
  exit 2
}

# Shell-quotes each argument, leaving plain words (letters, digits, _./:=,@%+-) bare.
q() {
  local s out=()
  for s in "$@"; do
    if [[ "$s" =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then out+=("$s"); else out+=("'${s//\'/\'\\\'\'}'"); fi
  done
  echo "${out[*]}"
}
