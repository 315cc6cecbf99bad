#!/usr/bin/env bash
# The one deploy path: preflight -> CloudFormation stack -> its outputs ->
# .chalice/config.json -> chalice deploy -> the on-prem settings. Run from anywhere; needs the
# AWS CLI, the .venv (scripts/bootstrap.sh) and credentials for the target account.
#
#   scripts/deploy.sh --ami-id ami-0123 --vpc-id vpc-0123 --subnets subnet-a,subnet-b \
#       [--stage dev] [--stack-name transcription-pipeline] [--region us-east-1] \
#       [--bedrock-model-id ID] [--alarm-email ops@example.com] [--max-workers N]
#       [--llm-concurrency N] [--parameter Key=Value ...] [--dry-run]
#
# --max-workers and --llm-concurrency set the stack's MaxWorkers and LlmCallerConcurrency; the
# LLM Caller's reserved concurrency follows the stack's output (stage_config.py). Size both
# with docs/design.md "Scaling".
#
# The preflight (cloudformation/preflight.py) checks the account first and stops the deploy
# before anything changes if it would fail. --dry-run prints every command and runs none
# (the preflight only where AWS credentials exist): no credentials needed. See README "Deploy".
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
  sed -n '2,17s/^# \{0,1\}//p' "$0" >&2
  exit 2
}

STAGE=dev
STACK_NAME=transcription-pipeline
REGION=${AWS_REGION:-${AWS_DEFAULT_REGION:-us-east-1}}
AMI_ID=""
VPC_ID=""
SUBNETS=""
ALARM_EMAIL=""
BEDROCK_MODEL_ID=""  # empty: stage_config.py's default for the region
DRY_RUN=0
EXTRA_PARAMETERS=()

while (($#)); do
  case "$1" in
    --stage) STAGE=${2:?--stage needs a value}; shift 2 ;;
    --stack-name) STACK_NAME=${2:?--stack-name needs a value}; shift 2 ;;
    --region) REGION=${2:?--region needs a value}; shift 2 ;;
    --ami-id) AMI_ID=${2:?--ami-id needs a value}; shift 2 ;;
    --vpc-id) VPC_ID=${2:?--vpc-id needs a value}; shift 2 ;;
    --subnets) SUBNETS=${2:?--subnets needs a value}; shift 2 ;;
    --alarm-email) ALARM_EMAIL=${2:?--alarm-email needs a value}; shift 2 ;;
    --bedrock-model-id) BEDROCK_MODEL_ID=${2:?--bedrock-model-id needs a value}; shift 2 ;;
    --max-workers) EXTRA_PARAMETERS+=("MaxWorkers=${2:?--max-workers needs a value}"); shift 2 ;;
    --llm-concurrency)
      EXTRA_PARAMETERS+=("LlmCallerConcurrency=${2:?--llm-concurrency needs a value}")
      shift 2
      ;;
    --parameter) EXTRA_PARAMETERS+=("${2:?--parameter needs Key=Value}"); shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h | --help) usage ;;
    *) echo "deploy: unknown option $1" >&2; usage ;;
  esac
done

if [[ ! "$STAGE" =~ ^[a-z0-9-]{1,20}$ ]]; then
  echo "deploy: --stage must be 1-20 characters of a-z, 0-9 and '-' (got '$STAGE')" >&2
  exit 2
fi

PYTHON=${PYTHON:-.venv/bin/python}
CHALICE=${CHALICE:-.venv/bin/chalice}
OUTPUTS_JSON="build/deploy/$STACK_NAME-outputs.json"

# Print a command (shell-quoted, copy-pastable); run it unless this is a dry run.
show() {
  printf '+'
  printf ' %q' "$@"
}
run() {
  show "$@"
  printf '\n'
  if ((!DRY_RUN)); then "$@"; fi
}

PARAMETERS=("Stage=$STAGE")
[ -n "$AMI_ID" ] && PARAMETERS+=("WorkerAmiId=$AMI_ID")
[ -n "$VPC_ID" ] && PARAMETERS+=("VpcId=$VPC_ID")
[ -n "$SUBNETS" ] && PARAMETERS+=("SubnetIds=$SUBNETS")
[ -n "$ALARM_EMAIL" ] && PARAMETERS+=("AlarmEmail=$ALARM_EMAIL")
PARAMETERS+=("${EXTRA_PARAMETERS[@]}")

MODEL_ARGS=()
[ -n "$BEDROCK_MODEL_ID" ] && MODEL_ARGS=(--bedrock-model-id "$BEDROCK_MODEL_ID")
PREFLIGHT=("$PYTHON" -m cloudformation.preflight --region "$REGION" --stage "$STAGE"
  --stack-name "$STACK_NAME" "${MODEL_ARGS[@]}")
for parameter in "${PARAMETERS[@]}"; do PREFLIGHT+=(--parameter "$parameter"); done

if ((!DRY_RUN)); then
  for tool in aws "$PYTHON" "$CHALICE"; do
    command -v "$tool" >/dev/null || {
      echo "deploy: $tool not found (AWS CLI on PATH; .venv from scripts/bootstrap.sh)" >&2
      exit 1
    }
  done
  [ -f chalice_app/stage_config.py ] || {
    echo "deploy: chalice_app/stage_config.py is missing" >&2
    exit 1
  }
  aws sts get-caller-identity --region "$REGION" --query Account --output text >/dev/null
  if ! aws cloudformation describe-stacks --region "$REGION" --stack-name "$STACK_NAME" \
    >/dev/null 2>&1; then
    if [ -z "$AMI_ID" ] || [ -z "$VPC_ID" ] || [ -z "$SUBNETS" ]; then
      echo "deploy: first deploy of $STACK_NAME: --ami-id, --vpc-id and --subnets are required" >&2
      exit 2
    fi
  fi
fi

echo "== preflight: what the account would refuse"
show "${PREFLIGHT[@]}"
printf '\n'
if ((!DRY_RUN)); then
  "${PREFLIGHT[@]}" || {
    echo "deploy: the preflight failed (above); nothing was changed" >&2
    exit 1
  }
elif command -v aws >/dev/null && [ -x "$PYTHON" ] &&
  aws sts get-caller-identity --region "$REGION" >/dev/null 2>&1; then
  "${PREFLIGHT[@]}" || echo "deploy: a real deploy would stop here (the preflight failed)" >&2
else
  echo "(preflight not run: no AWS credentials or .venv here)"
fi

echo "== 1/5 CloudFormation stack $STACK_NAME in $REGION"
run aws cloudformation deploy \
  --region "$REGION" \
  --stack-name "$STACK_NAME" \
  --template-file cloudformation/pipeline.yaml \
  --capabilities CAPABILITY_IAM \
  --no-fail-on-empty-changeset \
  --parameter-overrides "${PARAMETERS[@]}"

echo "== 2/5 stack outputs -> $OUTPUTS_JSON"
((DRY_RUN)) || mkdir -p "$(dirname "$OUTPUTS_JSON")"
show aws cloudformation describe-stacks --region "$REGION" --stack-name "$STACK_NAME" \
  --query "Stacks[0].Outputs" --output json
printf ' > %q\n' "$OUTPUTS_JSON"
if ((!DRY_RUN)); then
  aws cloudformation describe-stacks --region "$REGION" --stack-name "$STACK_NAME" \
    --query "Stacks[0].Outputs" --output json >"$OUTPUTS_JSON"
fi

echo "== 3/5 Chalice app, stage $STAGE"
run "$PYTHON" chalice_app/stage_config.py --stage "$STAGE" --outputs-json "$OUTPUTS_JSON" \
  "${MODEL_ARGS[@]}"
# chalice copies vendor/ (a link to pipeline_core) as it is: this machine's bytecode stays out.
run find pipeline_core -name __pycache__ -type d -prune -exec rm -rf {} +
run env AWS_DEFAULT_REGION="$REGION" "$CHALICE" --project-dir chalice_app deploy --stage "$STAGE"

# S3 invokes the Dispatcher asynchronously; Chalice cannot configure what Lambda does when an
# invocation fails. stage_config.py rendered it (retries, maximum event age, the stack's
# Dispatcher DLQ as on-failure destination; docs/design.md "Dispatch failures").
echo "== 4/5 the Dispatcher's asynchronous invocations: retries, event age, on-failure destination"
run aws lambda put-function-event-invoke-config --region "$REGION" \
  --cli-input-json "file://chalice_app/.chalice/event-invoke-config-$STAGE-dispatcher.json"

echo "== 5/5 on-prem settings (save as ~/.config/transcribe-onprem.toml)"
if ((DRY_RUN)); then
  show "$PYTHON" -m cloudformation.deploy_tools onprem-toml --region "$REGION" \
    --outputs-json "$OUTPUTS_JSON"
  printf '\n'
  # The shape of what a real run prints; needs no AWS and no .venv.
  python3 -m cloudformation.deploy_tools onprem-toml --region "$REGION" --placeholders
else
  "$PYTHON" -m cloudformation.deploy_tools onprem-toml --region "$REGION" \
    --outputs-json "$OUTPUTS_JSON"
  echo "deploy: done. The GPU worker starts when the first recording arrives."
fi
