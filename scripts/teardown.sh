#!/usr/bin/env bash
# Removes a deployment: the Chalice app (Lambdas, bucket notification), then the stack.
#
#   scripts/teardown.sh [--stage dev] [--stack-name transcription-pipeline] [--region R] \
#       [--delete-data [--bucket NAME]] [--yes] [--dry-run]
#
# WARNING: the bucket holds every recording and transcript. The stack keeps it (DeletionPolicy
# Retain) unless --delete-data is given, which deletes every object version and the bucket:
# that cannot be undone. The job table (job history) is always deleted with the stack.
# A bucket kept by an earlier teardown is removed with --delete-data --bucket NAME.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
  sed -n '2,10s/^# \{0,1\}//p' "$0" >&2
  exit 2
}

STAGE=dev
STACK_NAME=transcription-pipeline
REGION=${AWS_REGION:-${AWS_DEFAULT_REGION:-us-east-1}}
DELETE_DATA=0
ASSUME_YES=0
DRY_RUN=0
BUCKET=""

while (($#)); do
  case "$1" in
    --stage) STAGE=${2:?--stage needs a value}; shift 2 ;;
    --stack-name) STACK_NAME=${2:?--stack-name needs a value}; shift 2 ;;
    --region) REGION=${2:?--region needs a value}; shift 2 ;;
    --delete-data) DELETE_DATA=1; shift ;;
    --bucket) BUCKET=${2:?--bucket needs a value}; shift 2 ;;
    --yes) ASSUME_YES=1; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h | --help) usage ;;
    *) echo "teardown: unknown option $1" >&2; usage ;;
  esac
done

PYTHON=${PYTHON:-.venv/bin/python}
CHALICE=${CHALICE:-.venv/bin/chalice}

run() {
  printf '+'
  printf ' %q' "$@"
  printf '\n'
  if ((!DRY_RUN)); then "$@"; fi
}

echo "teardown: stack $STACK_NAME and Chalice stage $STAGE in $REGION"
if ((DELETE_DATA)); then
  echo "teardown: WARNING --delete-data: every recording and transcript in the bucket is deleted for good"
else
  echo "teardown: the bucket and its data are kept (delete them later with --delete-data)"
fi
if ((!ASSUME_YES)); then
  read -r -p "Type the stack name ($STACK_NAME) to continue: " answer || answer=""
  if [ "$answer" != "$STACK_NAME" ]; then
    echo "teardown: not confirmed, nothing changed" >&2
    exit 1
  fi
fi

STACK_EXISTS=1
if ((DRY_RUN)); then
  BUCKET=${BUCKET:-<BucketName>}
elif ! aws cloudformation describe-stacks --region "$REGION" --stack-name "$STACK_NAME" \
  >/dev/null 2>&1; then
  STACK_EXISTS=0
  echo "teardown: stack $STACK_NAME does not exist (already deleted)"
elif [ -z "$BUCKET" ]; then
  BUCKET=$(aws cloudformation describe-stacks --region "$REGION" --stack-name "$STACK_NAME" \
    --query "Stacks[0].Outputs[?OutputKey=='BucketName'].OutputValue" --output text)
fi

if ((STACK_EXISTS)); then
  run env AWS_DEFAULT_REGION="$REGION" "$CHALICE" --project-dir chalice_app delete --stage "$STAGE"
  run aws cloudformation delete-stack --region "$REGION" --stack-name "$STACK_NAME"
  run aws cloudformation wait stack-delete-complete --region "$REGION" --stack-name "$STACK_NAME"
fi
if ((DELETE_DATA)); then
  if [ -z "$BUCKET" ]; then
    echo "teardown: which bucket? give --bucket NAME" >&2
    exit 2
  fi
  run "$PYTHON" -m cloudformation.deploy_tools empty-bucket --region "$REGION" --bucket "$BUCKET"
  run aws s3api delete-bucket --region "$REGION" --bucket "$BUCKET"
else
  echo "teardown: kept bucket $BUCKET; its lifecycle rules keep expiring what it holds"
  echo "  (docs/operations.md, \"Data lifecycle\"); to remove it and its data now:"
  echo "  scripts/teardown.sh --region $REGION --delete-data --bucket $BUCKET"
fi
