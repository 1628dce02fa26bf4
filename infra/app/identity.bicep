// The user-assigned managed identity licshift runs as: host storage, its own queues and tables,
// Application Insights (Entra auth) and Microsoft Graph all use this one identity.
param name string
param location string
param tags object = {}

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

output id string = identity.id
output name string = identity.name
output clientId string = identity.properties.clientId
output principalId string = identity.properties.principalId
