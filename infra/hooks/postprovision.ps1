# azd postprovision hook (Windows, PowerShell 7; postprovision.sh is the POSIX twin and says why):
# grant licshift's managed identity its Microsoft Graph application permissions with retries, or print
# the commands for an admin who may. It never fails `azd up`.
$ErrorActionPreference = 'Continue'

$GraphAppId = '00000003-0000-0000-c000-000000000000'
$MI = "$env:AZURE_MANAGED_IDENTITY_PRINCIPAL_ID"
$Roles = @("$env:LICSHIFT_GRAPH_APP_ROLES" -split '\s+' | Where-Object { $_ })
$Attempts = if ($env:LICSHIFT_GRANT_ATTEMPTS) { [int]$env:LICSHIFT_GRANT_ATTEMPTS } else { 10 }
$Wait = if ($env:LICSHIFT_GRANT_RETRY_SECONDS) { [int]$env:LICSHIFT_GRANT_RETRY_SECONDS } else { 20 }

function Say([string]$Text) { Write-Host "licshift: $Text" }

function Show-ManualCommands {
    Say 'an admin with the Privileged Role Administrator role (or Global Administrator) grants them with:'
    Write-Host ''
    Write-Host "  `$MI = '$MI'"
    Write-Host "  `$Graph = az ad sp show --id $GraphAppId --query id -o tsv"
    Write-Host "  foreach (`$Role in '$($Roles -join "','")') {"
    Write-Host "    `$RoleId = az ad sp show --id $GraphAppId --query `"appRoles[?value=='`$Role'].id`" -o tsv"
    Write-Host "    `$Body = @{ principalId = `$MI; resourceId = `$Graph; appRoleId = `$RoleId } | ConvertTo-Json -Compress"
    Write-Host "    az rest --method POST --uri `"https://graph.microsoft.com/v1.0/servicePrincipals/`$MI/appRoleAssignments`" --headers Content-Type=application/json --body `$Body"
    Write-Host '  }'
    Write-Host ''
}

function Stop-Granting([string]$Reason) {
    Say $Reason
    Show-ManualCommands
    exit 0
}

if ($env:GRAPH_PERMISSIONS_GRANTED -eq 'true') {
    Say 'Microsoft Graph permissions were granted in the deployment (LICSHIFT_GRANT_GRAPH_PERMISSIONS=true).'
    exit 0
}
if (-not $MI -or $Roles.Count -eq 0) {
    Say "AZURE_MANAGED_IDENTITY_PRINCIPAL_ID or LICSHIFT_GRAPH_APP_ROLES is missing from the azd environment: run 'azd provision' first; nothing was granted."
    exit 0
}
Say "granting Microsoft Graph application permissions to the managed identity ${MI}: $($Roles -join ' ')"
if (-not (Get-Command az -ErrorAction SilentlyContinue)) {
    Stop-Granting 'the Azure CLI (az) is not installed here, so nothing was granted.'
}
az account show --only-show-errors *> $null
if ($LASTEXITCODE -ne 0) { Stop-Granting "the Azure CLI is not signed in ('az login'), so nothing was granted." }
$Graph = az ad sp show --id $GraphAppId --query id -o tsv --only-show-errors 2> $null
if (-not $Graph) { Stop-Granting 'could not read the Microsoft Graph service principal with az, so nothing was granted.' }

foreach ($Role in $Roles) {
    $RoleId = az ad sp show --id $GraphAppId --only-show-errors `
        --query "appRoles[?value=='$Role' && contains(allowedMemberTypes, 'Application')].id" -o tsv 2> $null
    if (-not $RoleId) { Stop-Granting "Microsoft Graph has no application permission named $Role; nothing more was granted." }

    $Held = $null
    for ($Attempt = 1; ; $Attempt++) {
        $Held = az rest --method GET --only-show-errors `
            --uri "https://graph.microsoft.com/v1.0/servicePrincipals/$MI/appRoleAssignments?`$select=appRoleId,resourceId" `
            --query "value[?resourceId=='$Graph'].appRoleId" -o tsv 2> $null
        if ($LASTEXITCODE -eq 0) { break }
        if ($Attempt -ge $Attempts) { Stop-Granting "the identity $MI is still not visible in Entra ID after $Attempts tries." }
        Say "the identity is not visible in Entra ID yet (replication); retrying in ${Wait}s ($Attempt/$Attempts)"
        Start-Sleep -Seconds $Wait
    }
    if (@($Held) -contains $RoleId) { Say "${Role}: already granted"; continue }

    $Body = @{ principalId = $MI; resourceId = $Graph; appRoleId = $RoleId } | ConvertTo-Json -Compress
    $BodyFile = New-TemporaryFile
    Set-Content -Path $BodyFile -Value $Body -NoNewline
    try {
        for ($Attempt = 1; ; $Attempt++) {
            $Err = az rest --method POST --only-show-errors `
                --uri "https://graph.microsoft.com/v1.0/servicePrincipals/$MI/appRoleAssignments" `
                --headers 'Content-Type=application/json' --body "@$BodyFile" -o none 2>&1 | Out-String
            if ($LASTEXITCODE -eq 0) { Say "${Role}: granted"; break }
            if ($Err -match 'already exists') { Say "${Role}: already granted"; break }
            if ($Err -match 'Authorization_RequestDenied|Insufficient privileges|Forbidden') {
                Stop-Granting 'the signed-in account may not grant application permissions (Authorization_RequestDenied).'
            }
            $Last = ($Err.Trim() -split "`n")[-1]
            if ($Attempt -ge $Attempts) { Stop-Granting "granting $Role kept failing: $Last" }
            Say "${Role}: not granted yet ($Last); retrying in ${Wait}s ($Attempt/$Attempts)"
            Start-Sleep -Seconds $Wait
        }
    }
    finally {
        Remove-Item -Path $BodyFile -ErrorAction SilentlyContinue
    }
}
Say 'every Microsoft Graph permission licshift needs is granted.'
