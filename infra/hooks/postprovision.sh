#!/bin/sh
# azd postprovision hook (POSIX; postprovision.ps1 is the Windows twin): grant licshift's managed
# identity its Microsoft Graph application permissions, unless the deployment already did
# (LICSHIFT_GRANT_GRAPH_PERMISSIONS=true). Granting needs a signed-in `az` with the rights of a
# Privileged Role Administrator (or a CI principal with AppRoleAssignment.ReadWrite.All and
# Application.Read.All); without them this prints the exact commands for an admin who has them.
# A brand-new identity can take minutes to reach Entra ID's replicas: grants are retried meanwhile.
# It never fails `azd up`: the deployment is complete without the grant, licshift just cannot call
# Graph until it is made (wave commands are then refused at intake, and say why).
set -u

GRAPH_APP_ID=00000003-0000-0000-c000-000000000000
MI="${AZURE_MANAGED_IDENTITY_PRINCIPAL_ID:-}"
ROLES="${LICSHIFT_GRAPH_APP_ROLES:-}"
ATTEMPTS="${LICSHIFT_GRANT_ATTEMPTS:-10}"
WAIT="${LICSHIFT_GRANT_RETRY_SECONDS:-20}"

say() { printf 'licshift: %s\n' "$*"; }

manual_commands() {
    say "an admin with the Privileged Role Administrator role (or Global Administrator) grants them with:"
    printf '\n'
    printf '  MI=%s\n' "$MI"
    printf '  GRAPH=$(az ad sp show --id %s --query id -o tsv)\n' "$GRAPH_APP_ID"
    printf '  for ROLE in %s; do\n' "$ROLES"
    printf '    ROLE_ID=$(az ad sp show --id %s --query "appRoles[?value==%s].id" -o tsv)\n' "$GRAPH_APP_ID" "'\$ROLE'"
    printf '    az rest --method POST --uri "https://graph.microsoft.com/v1.0/servicePrincipals/$MI/appRoleAssignments" \\\n'
    printf '      --body "{\\"principalId\\":\\"$MI\\",\\"resourceId\\":\\"$GRAPH\\",\\"appRoleId\\":\\"$ROLE_ID\\"}"\n'
    printf '  done\n\n'
    say "(the same in PowerShell: infra/hooks/postprovision.ps1 prints it on Windows; README \"Deployment\")"
}

give_up() {
    say "$1"
    manual_commands
    exit 0
}

if [ "${GRAPH_PERMISSIONS_GRANTED:-false}" = "true" ]; then
    say "Microsoft Graph permissions were granted in the deployment (LICSHIFT_GRANT_GRAPH_PERMISSIONS=true)."
    exit 0
fi
if [ -z "$MI" ] || [ -z "$ROLES" ]; then
    say "AZURE_MANAGED_IDENTITY_PRINCIPAL_ID or LICSHIFT_GRAPH_APP_ROLES is missing from the azd environment:"
    say "run 'azd provision' first; nothing was granted."
    exit 0
fi
say "granting Microsoft Graph application permissions to the managed identity $MI: $ROLES"
if ! command -v az >/dev/null 2>&1; then
    give_up "the Azure CLI (az) is not installed here, so nothing was granted."
fi
if ! az account show --only-show-errors >/dev/null 2>&1; then
    give_up "the Azure CLI is not signed in ('az login'), so nothing was granted."
fi
GRAPH=$(az ad sp show --id "$GRAPH_APP_ID" --query id -o tsv --only-show-errors 2>/dev/null)
if [ -z "$GRAPH" ]; then
    give_up "could not read the Microsoft Graph service principal with az, so nothing was granted."
fi

assigned() {  # app role ids the identity holds on Graph; fails while the identity is not replicated yet
    az rest --method GET --only-show-errors \
        --uri "https://graph.microsoft.com/v1.0/servicePrincipals/$MI/appRoleAssignments?\$select=appRoleId,resourceId" \
        --query "value[?resourceId=='$GRAPH'].appRoleId" -o tsv 2>/dev/null
}

grant() {  # prints az's error on failure
    az rest --method POST --only-show-errors \
        --uri "https://graph.microsoft.com/v1.0/servicePrincipals/$MI/appRoleAssignments" \
        --headers "Content-Type=application/json" \
        --body "{\"principalId\":\"$MI\",\"resourceId\":\"$GRAPH\",\"appRoleId\":\"$1\"}" -o none 2>&1
}

for role in $ROLES; do
    role_id=$(az ad sp show --id "$GRAPH_APP_ID" --only-show-errors \
        --query "appRoles[?value=='$role' && contains(allowedMemberTypes, 'Application')].id" -o tsv 2>/dev/null)
    if [ -z "$role_id" ]; then
        give_up "Microsoft Graph has no application permission named $role; nothing more was granted."
    fi
    attempt=1
    while :; do
        held=$(assigned) && break
        [ "$attempt" -ge "$ATTEMPTS" ] && give_up "the identity $MI is still not visible in Entra ID after $ATTEMPTS tries."
        say "the identity is not visible in Entra ID yet (replication); retrying in ${WAIT}s ($attempt/$ATTEMPTS)"
        sleep "$WAIT"
        attempt=$((attempt + 1))
    done
    case " $(printf '%s' "$held" | tr '\n' ' ') " in
        *" $role_id "*) say "$role: already granted"; continue ;;
    esac
    attempt=1
    while :; do
        if error=$(grant "$role_id"); then
            say "$role: granted"
            break
        fi
        case "$error" in
            *"already exists"*) say "$role: already granted"; break ;;
            *Authorization_RequestDenied* | *"Insufficient privileges"* | *Forbidden*)
                give_up "the signed-in account may not grant application permissions (Authorization_RequestDenied)." ;;
        esac
        [ "$attempt" -ge "$ATTEMPTS" ] && give_up "granting $role kept failing: $(printf '%s' "$error" | tail -n 1)"
        say "$role: not granted yet ($(printf '%s' "$error" | tail -n 1)); retrying in ${WAIT}s ($attempt/$ATTEMPTS)"
        sleep "$WAIT"
        attempt=$((attempt + 1))
    done
done
say "every Microsoft Graph permission licshift needs is granted."
