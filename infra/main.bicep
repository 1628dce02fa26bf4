// licshift on Azure Functions Flex Consumption (Python 3.11): `azd up` deploys everything below.
// Resources are raw ARM types with well-known API versions (no registry modules), so the files stay
// readable offline and tests/unit/test_infra.py can parse them with pycep-parser.
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('Name of the azd environment; names the resource group and seeds the unique resource token.')
param environmentName string

@minLength(1)
@description('Azure region for every resource. It must offer Azure Functions Flex Consumption.')
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Object id of the licshift operator (azd passes the signed-in person or CI principal): gets the operator role set (send wave commands, read the ledger, flip the kill switch), never a role on the app package. Empty: none.')
param principalId string = ''

@allowed([
  'User'
  'ServicePrincipal'
  'Group'
])
@description('Kind of principal principalId names (azd passes AZURE_PRINCIPAL_TYPE: ServicePrincipal when a CI principal deploys).')
param principalType string = 'User'

@description('Grant the managed identity its Microsoft Graph application permissions inside the deployment (needs a deployer with AppRoleAssignment.ReadWrite.All + Application.Read.All, e.g. Privileged Role Administrator, or the whole deployment fails). Off by default: the postprovision hook grants them with retries when the deployer may, else prints the commands for an admin.')
param grantGraphPermissions bool = false

@description('E-mail address that receives licshift alerts (restores, halts, poison messages, failures, drift). Empty: alerts fire in Azure Monitor only.')
param alertEmail string = ''

@minValue(1)
@maxValue(1000)
@description('Flex Consumption instance ceiling (1 to 1000). Graph writes are bounded by the scheduler, not by instances: more instances only add reads.')
param maximumInstanceCount int = 40

@allowed([
  512
  2048
  4096
])
@description('Memory per Flex Consumption instance (MB).')
param instanceMemoryMB int = 2048

@allowed([
  'Standard_ZRS'
  'Standard_GZRS'
  'Standard_RAGZRS'
  'Standard_LRS'
])
@description('Redundancy of the storage account that holds the ledger (the audit trail). Zone-redundant by default; Standard_LRS only where the region has no availability zones.')
param storageSkuName string = 'Standard_ZRS'

@description('Network isolation: the app joins a virtual network and reaches storage through private endpoints, and the storage account\'s public endpoint is off (the licshift CLI then runs from inside the network). Off by default.')
param vnetEnabled bool = false

@minValue(30)
@maxValue(730)
@description('Days Log Analytics keeps telemetry (the durable audit trail is the ledger in Table Storage).')
param logRetentionInDays int = 30

// --- licshift settings an admin tunes (defaults = src/licshift/settings.py) ------------------------

@minLength(3)
@maxLength(56)
@description('LICSHIFT_WAVES_QUEUE: queue the admin CLI puts wave commands on (its -poison twin is created too).')
param wavesQueueName string = 'licshift-waves'

@minLength(3)
@maxLength(56)
@description('LICSHIFT_REMOVALS_QUEUE: queue of per-user removal and restore work (its -poison twin is created too).')
param removalsQueueName string = 'licshift-removals'

@minLength(1)
@maxLength(55)
@description('LICSHIFT_TABLE_PREFIX: prefix of the ledger tables (letters and digits, starting with a letter).')
param tablePrefix string = 'licshift'

@allowed([
  15
  20
  30
  60
  120
  300
])
@description('LICSHIFT_TICK_SECONDS: seconds between scheduler ticks; the tick schedule (NCRONTAB, UTC) is derived from it.')
param tickSeconds int = 60

@description('LICSHIFT_DRIFT_SCHEDULE: NCRONTAB (UTC; Flex has no time zone setting) of the drift watch.')
param driftSchedule string = '0 0 * * * *'

@allowed([
  'no-loss'
  'identical'
])
@description('LICSHIFT_POLICY: decision policy.')
param policy string = 'no-loss'

@description('LICSHIFT_GROUP_ALLOWLIST: comma-separated group ids waves may target. Empty: any group.')
param groupAllowlist string = ''

@description('LICSHIFT_WRITE_RATE_CEILING: Graph writes per second licshift may use at most, 0.01 to 20 (a string: Bicep has no decimals).')
param writeRateCeiling string = '20'

@minValue(1)
@maxValue(1000)
@description('LICSHIFT_CANARY_MAX_USERS: largest wave allowed without a completed, clean canary.')
param canaryMaxUsers int = 25

@description('LICSHIFT_DRIFT_REMOVE: true lets the drift watch remove drifted direct licenses again with a follow-up wave (full rule).')
param driftRemove bool = false

@description('LICSHIFT_KILL_SWITCH: true stops every removal (the control table switch does the same at run time).')
param killSwitch bool = false

@description('LICSHIFT_REPROCESS_ENABLED: let `licshift reprocess` call reprocessLicenseAssignment. Adds the Graph permission User.ReadWrite.All (the least privileged one that API accepts, and broader than the rest: it can write any user property), so it is off by default.')
param reprocessEnabled bool = false

@description('LICSHIFT_GRAPH_ENDPOINT: Microsoft Graph base URL.')
param graphEndpoint string = 'https://graph.microsoft.com/v1.0'

@description('More app settings (e.g. LICSHIFT_WRITE_RATE_FLOOR). Every deployment rewrites the app settings, so keep tuned values here, not only in the portal.')
param additionalAppSettings object = {}

var abbrs = loadJsonContent('./abbreviations.json')
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}
var functionAppName = '${abbrs.webSitesFunctions}licshift-${resourceToken}'
var deploymentContainerName = 'app-package-${take(functionAppName, 32)}-${take(resourceToken, 7)}'

// The host moves a message to '<queue>-poison' after maxDequeueCount failures; both poison queues
// exist up front so their triggers can listen from the first minute.
var queueNames = [
  wavesQueueName
  '${wavesQueueName}-poison'
  removalsQueueName
  '${removalsQueueName}-poison'
]
// The ledger: the operator reads the first three and writes only Control (the kill switch).
var ledgerReadTableNames = [
  '${tablePrefix}Waves'
  '${tablePrefix}Outcomes'
  '${tablePrefix}Events'
]
var controlTableName = '${tablePrefix}Control'
var tableNames = concat(ledgerReadTableNames, [controlTableName])

// Microsoft Graph application permissions of the identity (app role values): granted by
// app/graph-permissions.bicep when grantGraphPermissions, else by infra/hooks/postprovision.
var graphAppRoles = [
  'LicenseAssignment.ReadWrite.All'
  'LicenseAssignment.Read.All'
  'User.Read.All'
  'GroupMember.Read.All'
]
// reprocessLicenseAssignment accepts nothing narrower than User.ReadWrite.All: granted only with reprocessEnabled.
var reprocessAppRoles = [
  'User.ReadWrite.All'
]
var grantedAppRoles = reprocessEnabled ? concat(graphAppRoles, reprocessAppRoles) : graphAppRoles

// NCRONTAB for each allowed tick length, so LICSHIFT_TICK_SECONDS and the schedule cannot disagree.
var tickSchedules = {
  '15': '*/15 * * * * *'
  '20': '*/20 * * * * *'
  '30': '*/30 * * * * *'
  '60': '0 * * * * *'
  '120': '0 */2 * * * *'
  '300': '0 */5 * * * *'
}

// Every %NAME% the bindings use must be set here: the Functions host has no defaults for them.
var licshiftSettings = {
  LICSHIFT_GRAPH_ENDPOINT: graphEndpoint
  LICSHIFT_WAVES_QUEUE: wavesQueueName
  LICSHIFT_REMOVALS_QUEUE: removalsQueueName
  LICSHIFT_TABLE_PREFIX: tablePrefix
  LICSHIFT_TICK_SCHEDULE: tickSchedules['${tickSeconds}']
  LICSHIFT_TICK_SECONDS: string(tickSeconds)
  LICSHIFT_DRIFT_SCHEDULE: driftSchedule
  LICSHIFT_DRIFT_REMOVE: driftRemove ? 'true' : 'false'
  LICSHIFT_SETTLE_SCHEDULE: '0 */5 * * * *'
  LICSHIFT_POLICY: policy
  LICSHIFT_GROUP_ALLOWLIST: groupAllowlist
  LICSHIFT_WRITE_RATE_CEILING: writeRateCeiling
  LICSHIFT_CANARY_MAX_USERS: string(canaryMaxUsers)
  LICSHIFT_KILL_SWITCH: killSwitch ? 'true' : 'false'
  LICSHIFT_REPROCESS_ENABLED: reprocessEnabled ? 'true' : 'false'
}

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: '${abbrs.resourcesResourceGroups}${environmentName}'
  location: location
  tags: tags
}

module identity 'app/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: '${abbrs.managedIdentityUserAssignedIdentities}licshift-${resourceToken}'
    location: location
    tags: tags
  }
}

module storage 'app/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: '${abbrs.storageStorageAccounts}${resourceToken}'
    location: location
    tags: tags
    deploymentContainerName: deploymentContainerName
    queueNames: queueNames
    tableNames: tableNames
    skuName: storageSkuName
    publicNetworkAccess: !vnetEnabled
  }
}

module network 'app/network.bicep' = if (vnetEnabled) {
  name: 'network'
  scope: rg
  params: {
    name: '${abbrs.networkVirtualNetworks}licshift-${resourceToken}'
    location: location
    tags: tags
    storageAccountName: storage.outputs.name
  }
}

module monitoring 'app/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    workspaceName: '${abbrs.operationalInsightsWorkspaces}licshift-${resourceToken}'
    appInsightsName: '${abbrs.insightsComponents}licshift-${resourceToken}'
    location: location
    tags: tags
    retentionInDays: logRetentionInDays
  }
}

module rbac 'app/rbac.bicep' = {
  name: 'rbac'
  scope: rg
  params: {
    storageAccountName: storage.outputs.name
    appInsightsName: monitoring.outputs.appInsightsName
    identityPrincipalId: identity.outputs.principalId
    principalId: principalId
    principalType: principalType
    wavesQueueName: wavesQueueName
    ledgerReadTableNames: ledgerReadTableNames
    controlTableName: controlTableName
  }
}

module api 'app/api.bicep' = {
  name: 'api'
  scope: rg
  params: {
    name: functionAppName
    planName: '${abbrs.webServerFarms}licshift-${resourceToken}'
    location: location
    tags: tags
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    storageAccountName: storage.outputs.name
    deploymentContainerName: deploymentContainerName
    appInsightsName: monitoring.outputs.appInsightsName
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
    virtualNetworkSubnetId: vnetEnabled ? network.outputs.appSubnetId : ''
    appSettings: union(licshiftSettings, additionalAppSettings)
  }
  // The host reaches storage with the identity as soon as it starts: grant the roles first.
  dependsOn: [
    rbac
  ]
}

module insights 'app/insights.bicep' = {
  name: 'insights'
  scope: rg
  params: {
    location: location
    tags: tags
    appInsightsName: monitoring.outputs.appInsightsName
    actionGroupName: '${abbrs.insightsActionGroups}licshift-${resourceToken}'
    alertNamePrefix: '${abbrs.insightsScheduledQueryRules}licshift-'
    alertEmail: alertEmail
  }
}

module graphPermissions 'app/graph-permissions.bicep' = if (grantGraphPermissions) {
  name: 'graph-permissions'
  scope: rg
  params: {
    principalId: identity.outputs.principalId
    appRoleNames: grantedAppRoles
  }
}

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = api.outputs.name
output AZURE_MANAGED_IDENTITY_CLIENT_ID string = identity.outputs.clientId
output AZURE_MANAGED_IDENTITY_PRINCIPAL_ID string = identity.outputs.principalId
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output APPLICATIONINSIGHTS_NAME string = monitoring.outputs.appInsightsName
output GRAPH_PERMISSIONS_GRANTED bool = grantGraphPermissions
// What infra/hooks/postprovision grants (space-separated app role values).
output LICSHIFT_GRAPH_APP_ROLES string = join(grantedAppRoles, ' ')
// What the licshift CLI needs (it signs in with az login, not with the identity):
// LicshiftStorage__queueServiceUri / __tableServiceUri = these two endpoints.
output AZURE_STORAGE_QUEUE_ENDPOINT string = storage.outputs.queueEndpoint
output AZURE_STORAGE_TABLE_ENDPOINT string = storage.outputs.tableEndpoint
output LICSHIFT_WAVES_QUEUE string = wavesQueueName
output LICSHIFT_REMOVALS_QUEUE string = removalsQueueName
output LICSHIFT_TABLE_PREFIX string = tablePrefix
