// Data-plane roles for the app's identity (and, optionally, the person running azd, so the licshift
// CLI can enqueue waves and read the ledger). Built-in role ids:
// https://learn.microsoft.com/azure/role-based-access-control/built-in-roles
param storageAccountName string
param appInsightsName string

@description('Principal id of the app\'s user-assigned managed identity.')
param identityPrincipalId string

@description('Object id of the deploying user or CI principal. Empty: no roles for it.')
param principalId string = ''

@allowed([
  'User'
  'ServicePrincipal'
  'Group'
])
param principalType string = 'User'

var storageRoles = [
  {
    // The Functions host: its locks, timer schedule monitors and the deployment package.
    name: 'Storage Blob Data Owner'
    id: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  }
  {
    // Queue triggers read and delete; the app and the host send (poison queues included).
    name: 'Storage Queue Data Contributor'
    id: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  }
  {
    // The ledger (Waves, Outcomes, Control, Events) and the host's diagnostic events.
    name: 'Storage Table Data Contributor'
    id: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
  }
]

var monitoringRole = {
  // Lets the identity send telemetry to an Application Insights component with local auth off.
  name: 'Monitoring Metrics Publisher'
  id: '3913510d-42f4-4e42-8a64-420c390055eb'
}

// The same storage roles for the deployer, when one is named.
var deployerRoles = empty(principalId) ? [] : storageRoles

resource storageAccount 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

resource appStorageRoles 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for role in storageRoles: {
    name: guid(storageAccount.id, identityPrincipalId, role.id)
    scope: storageAccount
    properties: {
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role.id)
      principalId: identityPrincipalId
      principalType: 'ServicePrincipal'
      description: '${role.name} for the licshift function app'
    }
  }
]

resource appMonitoringRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, identityPrincipalId, monitoringRole.id)
  scope: appInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', monitoringRole.id)
    principalId: identityPrincipalId
    principalType: 'ServicePrincipal'
    description: '${monitoringRole.name} for the licshift function app'
  }
}

resource deployerStorageRoles 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for role in deployerRoles: {
    name: guid(storageAccount.id, principalId, role.id)
    scope: storageAccount
    properties: {
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role.id)
      principalId: principalId
      principalType: principalType
      description: '${role.name} for the licshift admin (CLI and local development)'
    }
  }
]

resource deployerMonitoringRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(principalId)) {
  name: guid(appInsights.id, principalId, monitoringRole.id)
  scope: appInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', monitoringRole.id)
    principalId: principalId
    principalType: principalType
    description: '${monitoringRole.name} for the licshift admin (local development)'
  }
}
