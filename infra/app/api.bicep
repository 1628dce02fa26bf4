// The Flex Consumption plan and the function app (Python 3.11, code deployed by azd as a package
// into a blob container the identity reads). Only settings valid on Flex are emitted: the runtime,
// the scale limits and the package location live in functionAppConfig, not in app settings.
param name string
param planName string
param location string
param tags object = {}

@description('Resource id of the user-assigned managed identity.')
param identityId string

@description('Client id of the user-assigned managed identity.')
param identityClientId string

param storageAccountName string
param deploymentContainerName string
param appInsightsName string

@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 40

@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Subnet (delegated to Microsoft.App/environments) the app joins; empty: no virtual network.')
param virtualNetworkSubnetId string = ''

@description('licshift\'s own settings (LICSHIFT_*); the identity and storage settings below are added to them.')
param appSettings object = {}

resource storageAccount 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
  tags: union(tags, {
    'azd-service-name': 'api'
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    virtualNetworkSubnetId: empty(virtualNetworkSubnetId) ? null : virtualNetworkSubnetId
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storageAccount.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        instanceMemoryMB: instanceMemoryMB
        maximumInstanceCount: maximumInstanceCount
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
  }

  resource settings 'config' = {
    name: 'appsettings'
    // The platform settings win over appSettings: a caller cannot point the app at other storage.
    properties: union(appSettings, {
      // Host storage, identity-based (no connection string, no keys).
      AzureWebJobsStorage__credential: 'managedidentity'
      AzureWebJobsStorage__clientId: identityClientId
      AzureWebJobsStorage__blobServiceUri: storageAccount.properties.primaryEndpoints.blob
      AzureWebJobsStorage__queueServiceUri: storageAccount.properties.primaryEndpoints.queue
      AzureWebJobsStorage__tableServiceUri: storageAccount.properties.primaryEndpoints.table
      // licshift's own connection (queue triggers' connection= and the ledger).
      LicshiftStorage__credential: 'managedidentity'
      LicshiftStorage__clientId: identityClientId
      LicshiftStorage__queueServiceUri: storageAccount.properties.primaryEndpoints.queue
      LicshiftStorage__tableServiceUri: storageAccount.properties.primaryEndpoints.table
      // Microsoft Graph: ManagedIdentityCredential picks the user-assigned identity by this id.
      AZURE_CLIENT_ID: identityClientId
      // Telemetry: OpenTelemetry from the worker (host.json telemetryMode), Entra auth.
      APPLICATIONINSIGHTS_CONNECTION_STRING: appInsights.properties.ConnectionString
      APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'Authorization=AAD;ClientId=${identityClientId}'
      PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY: 'true'
    })
  }
}

// No FTP and no basic (user name + password) publishing: azd deploys with an Entra ID token.
resource ftpPublishing 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmPublishing 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'scm'
  properties: {
    allow: false
  }
}

output id string = functionApp.id
output name string = functionApp.name
output defaultHostName string = functionApp.properties.defaultHostName
