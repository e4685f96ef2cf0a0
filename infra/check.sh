#!/usr/bin/env bash
# Checks infra/outpost.yaml without an AWS account: cfn-lint, then a deployment to moto's
# CloudFormation with assertions on what it created (infra/check_template.py).
#
#   OUTPOST_TEST_AWS_ENDPOINT=http://127.0.0.1:5055 infra/check.sh
#
# Needs python3 with boto3 (installed with moto) and a moto server at OUTPOST_TEST_AWS_ENDPOINT.
set -euo pipefail

CFN_LINT_VERSION=1.51.0
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${PYTHON:-python3}"
started=$SECONDS

if [[ -z "${OUTPOST_TEST_AWS_ENDPOINT:-}" ]]; then
  echo "infra/check.sh: OUTPOST_TEST_AWS_ENDPOINT must point at a moto server (e.g. http://127.0.0.1:5055)" >&2
  exit 2
fi

# cfn-lint runs through the same interpreter (its console script may not be on PATH).
cfn_lint() { "$python" -c 'import sys; from cfnlint.runner import main; sys.argv[0] = "cfn-lint"; sys.exit(main())' "$@"; }
if ! "$python" -c 'import cfnlint' >/dev/null 2>&1; then
  echo "infra/check.sh: installing cfn-lint ${CFN_LINT_VERSION}"
  "$python" -m pip install --quiet --disable-pip-version-check "cfn-lint==${CFN_LINT_VERSION}"
fi
have="$("$python" -c 'import importlib.metadata as m; print(m.version("cfn-lint"))')"
if [[ "$have" != "$CFN_LINT_VERSION" ]]; then
  echo "infra/check.sh: note: cfn-lint ${have} found, the check was written against ${CFN_LINT_VERSION}" >&2
fi

# Errors and warnings both fail. The only warnings the template has on purpose (W1030 on the
# compute inputs that default to "" for DeployCompute=false) are ignored per resource in its
# Metadata, with the reason; nothing is ignored here.
echo "== cfn-lint ${have} infra/outpost.yaml"
if ! cfn_lint --non-zero-exit-code warning -- "$here/outpost.yaml"; then
  echo "infra/check.sh: FAILED: cfn-lint found problems in infra/outpost.yaml" >&2
  exit 1
fi

echo "== deploying infra/outpost.yaml to moto at ${OUTPOST_TEST_AWS_ENDPOINT}"
if ! "$python" -W ignore "$here/check_template.py"; then
  echo "infra/check.sh: FAILED: the template did not deploy or check out on moto (see above)" >&2
  exit 1
fi
echo "infra/check.sh: ok ($((SECONDS - started))s)"
