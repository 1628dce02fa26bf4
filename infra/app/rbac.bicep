// Data-plane roles for the app's identity, and the operator role set for a person or CI principal
// (principalId, by default whoever runs azd). Built-in role ids:
// https://learn.microsoft.com/azure/role-based-access-control/built-in-roles
//
// The operator gets no role on blobs: the account holds the app package, and whoever can replace it
// runs code as the managed identity, which holds LicenseAssignment.ReadWrite.All. The licshift CLI
// needs only to put wave commands on the waves queue, read the ledger and flip the kill switch in
// the control table; each role is scoped to that one queue or table.
param storageAccountName string
param appInsightsName string

@description('Principal id of the app\'s user-assigned managed identity.')
param identityPrincipalId string

@description('Object id of the operator (the deploying user or CI principal). Empty: no roles for it.')
param principalId string = ''

@allowed([
  'User'
  'ServicePrincipal'
  'Group'
])
param principalType string = 'User'

@description('The queue the operator sends wave commands to.')
param wavesQueueName string

@description('Ledger tables the operator reads (waves, outcomes, events).')
param ledgerReadTableNames array

@description('The control table: the operator reads and writes the kill switch row.')
param controlTableName string

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

// The operator role set (README "Operator and viewer roles" lists the same as az commands).
var operatorQueueRole = {
  // Put messages on the waves queue; nothing else on any queue (no read, no delete, no create).
  name: 'Storage Queue Data Message Sender'
  id: 'c6a89b2d-59bc-44d0-9896-0f6e12d7b80a'
}
var operatorReadRole = {
  // Query waves, outcomes and events: status, reports, drift, intake's accept/refuse records.
  name: 'Storage Table Data Reader'
  id: '76199698-9eea-4c19-bc75-cec21354c6b6'
}
var operatorControlRole = {
  // Read and write the control row (licshift kill-switch on|off).
  name: 'Storage Table Data Contributor'
  id: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
}

var hasOperator = !empty(principalId)
var operatorReadTables = hasOperator ? ledgerReadTableNames : []

resource storageAccount 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' existing = {
  parent: storageAccount
  name: 'default'
}

resource wavesQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' existing = {
  parent: queueService
  name: wavesQueueName
}

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' existing = {
  parent: storageAccount
  name: 'default'
}

resource readTables 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' existing = [
  for tableName in operatorReadTables: {
    parent: tableService
    name: tableName
  }
]

resource controlTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' existing = {
  parent: tableService
  name: controlTableName
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

resource operatorQueueSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (hasOperator) {
  name: guid(wavesQueue.id, principalId, operatorQueueRole.id)
  scope: wavesQueue
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', operatorQueueRole.id)
    principalId: principalId
    principalType: principalType
    description: '${operatorQueueRole.name} for the licshift operator (CLI wave commands)'
  }
}

resource operatorTableReaders 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for (tableName, i) in operatorReadTables: {
    name: guid(readTables[i].id, principalId, operatorReadRole.id)
    scope: readTables[i]
    properties: {
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', operatorReadRole.id)
      principalId: principalId
      principalType: principalType
      description: '${operatorReadRole.name} for the licshift operator (CLI status, reports, drift)'
    }
  }
]

resource operatorControl 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (hasOperator) {
  name: guid(controlTable.id, principalId, operatorControlRole.id)
  scope: controlTable
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', operatorControlRole.id)
    principalId: principalId
    principalType: principalType
    description: '${operatorControlRole.name} for the licshift operator (CLI kill switch)'
  }
}
