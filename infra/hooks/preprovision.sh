#!/bin/sh
# azd preprovision hook (POSIX; preprovision.ps1 is the Windows twin): say up front what this deployer
# can and cannot do, before anything is created. It stops `azd provision` only where the deployment
# would certainly fail: a principal type that does not match the principal (UnmatchedPrincipalType on
# every role assignment), or a Graph grant inside the deployment (LICSHIFT_GRANT_GRAPH_PERMISSIONS=true)
# by a principal shown to lack the rights for it. Everything it cannot tell is said as such.
set -u

GRANTING_ROLES="62e90394-69f5-4237-9190-012177145e10 e8611ab8-c189-46e8-94e1-60213ab1f814"  # Global Admin, Privileged Role Admin
RBAC_WRITERS="Owner|User Access Administrator|Role Based Access Control Administrator"
PRINCIPAL="${AZURE_PRINCIPAL_ID:-}"
TYPE="${AZURE_PRINCIPAL_TYPE:-}"
GRANT_IN_DEPLOYMENT="${LICSHIFT_GRANT_GRAPH_PERMISSIONS:-false}"

say() { printf 'licshift: %s\n' "$*"; }
stop() { say "$1"; exit 1; }

say "checking what this deployment can do for principal ${PRINCIPAL:-(none)} (${TYPE:-type not set})"
if ! command -v az >/dev/null 2>&1 || ! az account show --only-show-errors >/dev/null 2>&1; then
    say "CANNOT TELL: the Azure CLI (az) is missing or not signed in, so nothing can be checked here."
    say "  The deployment still needs Owner, or User Access Administrator with Contributor, on the subscription."
    say "  Graph permissions: after provisioning, licshift prints the commands for an admin to grant them."
    exit 0
fi

# The principal type azd passes must match the principal: UnmatchedPrincipalType otherwise.
if [ -n "$PRINCIPAL" ]; then
    odata=$(az rest --method GET --only-show-errors \
        --uri "https://graph.microsoft.com/v1.0/directoryObjects/$PRINCIPAL?\$select=id" \
        --query '"@odata.type"' -o tsv 2>/dev/null)
    case "$odata" in
        *servicePrincipal) actual=ServicePrincipal ;;
        *user) actual=User ;;
        *group) actual=Group ;;
        *) actual="" ;;
    esac
    if [ -z "$actual" ]; then
        say "CANNOT TELL whether $PRINCIPAL is a user or a service principal (no directory read)."
    elif [ -z "$TYPE" ]; then
        azd env set AZURE_PRINCIPAL_TYPE "$actual" >/dev/null && TYPE=$actual
        say "OK: AZURE_PRINCIPAL_TYPE set to $actual (the kind of principal azd signed in as)."
    elif [ "$TYPE" != "$actual" ]; then
        stop "AZURE_PRINCIPAL_TYPE is $TYPE but $PRINCIPAL is a $actual: every role assignment would fail. Run: azd env set AZURE_PRINCIPAL_TYPE $actual"
    else
        say "OK: the operator roles go to $PRINCIPAL as a $actual."
    fi
fi

# Azure role assignments: the deployment creates several (the app's identity and the operator's).
subscription="${AZURE_SUBSCRIPTION_ID:-$(az account show --query id -o tsv 2>/dev/null)}"
if [ -n "$PRINCIPAL" ] && [ -n "$subscription" ]; then
    roles=$(az role assignment list --assignee "$PRINCIPAL" --scope "/subscriptions/$subscription" \
        --include-inherited --include-groups --query "[].roleDefinitionName" -o tsv --only-show-errors 2>/dev/null)
    if printf '%s\n' "$roles" | grep -Eqx "$RBAC_WRITERS"; then
        say "OK: you may create the role assignments ($(printf '%s\n' "$roles" | grep -Ex "$RBAC_WRITERS" | head -n 1))."
    else
        say "WARNING: no Owner, User Access Administrator or Role Based Access Control Administrator role found for you on"
        say "  subscription $subscription: the role assignments will fail unless a custom role allows them."
    fi
fi

# Microsoft Graph: may this principal grant application permissions (app role assignments)?
can_grant=unknown
if [ "$TYPE" = "ServicePrincipal" ]; then
    token=$(az account get-access-token --resource https://graph.microsoft.com --query accessToken -o tsv 2>/dev/null)
    payload=$(printf '%s' "$token" | cut -d. -f2 | tr '_-' '/+')
    while [ $((${#payload} % 4)) -ne 0 ]; do payload="$payload="; done
    claims=$(printf '%s' "$payload" | base64 -d 2>/dev/null)
    if [ -n "$claims" ]; then
        case "$claims" in
            *AppRoleAssignment.ReadWrite.All*Application.Read.All* | *Application.Read.All*AppRoleAssignment.ReadWrite.All*) can_grant=yes ;;
            *) can_grant=no ;;
        esac
    fi
elif [ -n "$TYPE" ]; then
    held=$(az rest --method GET --only-show-errors \
        --uri "https://graph.microsoft.com/v1.0/me/transitiveMemberOf/microsoft.graph.directoryRole?\$select=roleTemplateId" \
        --query "value[].roleTemplateId" -o tsv 2>/dev/null) && can_grant=no
    for role in $GRANTING_ROLES; do
        printf '%s\n' "$held" | grep -qx "$role" && can_grant=yes
    done
fi
case "$can_grant" in
    yes) say "OK: you may grant Microsoft Graph application permissions: the postprovision step grants them." ;;
    no)
        if [ "$GRANT_IN_DEPLOYMENT" = "true" ]; then
            stop "LICSHIFT_GRANT_GRAPH_PERMISSIONS is true but you may not grant Graph application permissions: the deployment would fail with Authorization_RequestDenied. Run: azd env set LICSHIFT_GRANT_GRAPH_PERMISSIONS false"
        fi
        say "NOTE: you may not grant Microsoft Graph application permissions (no active Privileged Role Administrator"
        say "  or Global Administrator role; AppRoleAssignment.ReadWrite.All + Application.Read.All for a CI principal)."
        say "  Everything else deploys; afterwards licshift prints the commands for an admin who may." ;;
    *) say "CANNOT TELL whether you may grant Microsoft Graph application permissions; the postprovision step tries." ;;
esac
exit 0
