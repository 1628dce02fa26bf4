# azd preprovision hook (Windows, PowerShell 7; preprovision.sh is the POSIX twin and says why): say up
# front what this deployer can and cannot do; stop only where the deployment would certainly fail.
$ErrorActionPreference = 'Continue'

$GrantingRoles = @('62e90394-69f5-4237-9190-012177145e10', 'e8611ab8-c189-46e8-94e1-60213ab1f814')  # Global Admin, Privileged Role Admin
$RbacWriters = @('Owner', 'User Access Administrator', 'Role Based Access Control Administrator')
$Principal = "$env:AZURE_PRINCIPAL_ID"
$Type = "$env:AZURE_PRINCIPAL_TYPE"
$GrantInDeployment = "$env:LICSHIFT_GRANT_GRAPH_PERMISSIONS"

function Say([string]$Text) { Write-Host "licshift: $Text" }
function Stop-Provision([string]$Text) { Say $Text; exit 1 }

Say "checking what this deployment can do for principal $(if ($Principal) { $Principal } else { '(none)' }) ($(if ($Type) { $Type } else { 'type not set' }))"
$HasAz = [bool](Get-Command az -ErrorAction SilentlyContinue)
if ($HasAz) { az account show --only-show-errors *> $null; $HasAz = ($LASTEXITCODE -eq 0) }
if (-not $HasAz) {
    Say 'CANNOT TELL: the Azure CLI (az) is missing or not signed in, so nothing can be checked here.'
    Say '  The deployment still needs Owner, or User Access Administrator with Contributor, on the subscription.'
    Say '  Graph permissions: after provisioning, licshift prints the commands for an admin to grant them.'
    exit 0
}

if ($Principal) {
    $OData = az rest --method GET --only-show-errors `
        --uri "https://graph.microsoft.com/v1.0/directoryObjects/${Principal}?`$select=id" `
        --query '"@odata.type"' -o tsv 2> $null
    $Actual = switch -Regex ("$OData") {
        'servicePrincipal$' { 'ServicePrincipal'; break }
        'user$' { 'User'; break }
        'group$' { 'Group'; break }
        default { '' }
    }
    if (-not $Actual) {
        Say "CANNOT TELL whether $Principal is a user or a service principal (no directory read)."
    }
    elseif (-not $Type) {
        azd env set AZURE_PRINCIPAL_TYPE $Actual *> $null
        $Type = $Actual
        Say "OK: AZURE_PRINCIPAL_TYPE set to $Actual (the kind of principal azd signed in as)."
    }
    elseif ($Type -ne $Actual) {
        Stop-Provision "AZURE_PRINCIPAL_TYPE is $Type but $Principal is a ${Actual}: every role assignment would fail. Run: azd env set AZURE_PRINCIPAL_TYPE $Actual"
    }
    else {
        Say "OK: the operator roles go to $Principal as a $Actual."
    }
}

$Subscription = if ($env:AZURE_SUBSCRIPTION_ID) { $env:AZURE_SUBSCRIPTION_ID } else { az account show --query id -o tsv 2> $null }
if ($Principal -and $Subscription) {
    $Held = @(az role assignment list --assignee $Principal --scope "/subscriptions/$Subscription" `
            --include-inherited --include-groups --query '[].roleDefinitionName' -o tsv --only-show-errors 2> $null)
    $Writer = $Held | Where-Object { $RbacWriters -contains $_ } | Select-Object -First 1
    if ($Writer) { Say "OK: you may create the role assignments ($Writer)." }
    else {
        Say 'WARNING: no Owner, User Access Administrator or Role Based Access Control Administrator role found for you on'
        Say "  subscription ${Subscription}: the role assignments will fail unless a custom role allows them."
    }
}

$CanGrant = 'unknown'
if ($Type -eq 'ServicePrincipal') {
    $Token = az account get-access-token --resource https://graph.microsoft.com --query accessToken -o tsv 2> $null
    if ($Token) {
        $Payload = ($Token -split '\.')[1].Replace('-', '+').Replace('_', '/')
        while ($Payload.Length % 4) { $Payload += '=' }
        $Claims = [Text.Encoding]::UTF8.GetString([Convert]::FromBase64String($Payload)) | ConvertFrom-Json
        $CanGrant = if (($Claims.roles -contains 'AppRoleAssignment.ReadWrite.All') -and ($Claims.roles -contains 'Application.Read.All')) { 'yes' } else { 'no' }
    }
}
elseif ($Type) {
    $Roles = az rest --method GET --only-show-errors `
        --uri "https://graph.microsoft.com/v1.0/me/transitiveMemberOf/microsoft.graph.directoryRole?`$select=roleTemplateId" `
        --query 'value[].roleTemplateId' -o tsv 2> $null
    if ($LASTEXITCODE -eq 0) {
        $CanGrant = if (@($Roles | Where-Object { $GrantingRoles -contains $_ }).Count -gt 0) { 'yes' } else { 'no' }
    }
}
switch ($CanGrant) {
    'yes' { Say 'OK: you may grant Microsoft Graph application permissions: the postprovision step grants them.' }
    'no' {
        if ($GrantInDeployment -eq 'true') {
            Stop-Provision 'LICSHIFT_GRANT_GRAPH_PERMISSIONS is true but you may not grant Graph application permissions: the deployment would fail with Authorization_RequestDenied. Run: azd env set LICSHIFT_GRANT_GRAPH_PERMISSIONS false'
        }
        Say 'NOTE: you may not grant Microsoft Graph application permissions (no active Privileged Role Administrator'
        Say '  or Global Administrator role; AppRoleAssignment.ReadWrite.All + Application.Read.All for a CI principal).'
        Say '  Everything else deploys; afterwards licshift prints the commands for an admin who may.'
    }
    default { Say 'CANNOT TELL whether you may grant Microsoft Graph application permissions; the postprovision step tries.' }
}
exit 0
