// Optional network isolation (main.bicep vnetEnabled, off by default): a virtual network the function
// app joins, private endpoints for the storage account's blob, queue and table services with their
// private DNS zones, and a NAT gateway so the app still reaches Microsoft Graph (new subnets get no
// default outbound internet access). The storage account then turns its public endpoint off.
param name string
param location string
param tags object = {}

@description('The storage account the private endpoints connect to.')
param storageAccountName string

@description('Address space of the virtual network.')
param addressPrefix string = '10.0.0.0/16'

@description('Subnet the function app joins (Flex Consumption needs at least a /27 of its own).')
param appSubnetPrefix string = '10.0.1.0/24'

@description('Subnet of the storage private endpoints.')
param endpointSubnetPrefix string = '10.0.2.0/24'

var storageServices = [
  'blob'
  'queue'
  'table'
]

resource storageAccount 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource outboundIp 'Microsoft.Network/publicIPAddresses@2024-05-01' = {
  name: 'pip-${name}'
  location: location
  tags: tags
  sku: {
    name: 'Standard'
  }
  properties: {
    publicIPAllocationMethod: 'Static'
  }
}

resource nat 'Microsoft.Network/natGateways@2024-05-01' = {
  name: 'ng-${name}'
  location: location
  tags: tags
  sku: {
    name: 'Standard'
  }
  properties: {
    publicIpAddresses: [
      {
        id: outboundIp.id
      }
    ]
  }
}

resource vnet 'Microsoft.Network/virtualNetworks@2024-05-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    addressSpace: {
      addressPrefixes: [
        addressPrefix
      ]
    }
    subnets: [
      {
        // Flex Consumption joins a subnet delegated to Microsoft.App/environments.
        name: 'app'
        properties: {
          addressPrefix: appSubnetPrefix
          delegations: [
            {
              name: 'flex-consumption'
              properties: {
                serviceName: 'Microsoft.App/environments'
              }
            }
          ]
          natGateway: {
            id: nat.id
          }
          defaultOutboundAccess: false
        }
      }
      {
        name: 'private-endpoints'
        properties: {
          addressPrefix: endpointSubnetPrefix
          privateEndpointNetworkPolicies: 'Disabled'
          defaultOutboundAccess: false
        }
      }
    ]
  }
}

resource dnsZones 'Microsoft.Network/privateDnsZones@2024-06-01' = [
  for service in storageServices: {
    name: 'privatelink.${service}.${environment().suffixes.storage}'
    location: 'global'
    tags: tags
  }
]

resource dnsLinks 'Microsoft.Network/privateDnsZones/virtualNetworkLinks@2024-06-01' = [
  for (service, i) in storageServices: {
    parent: dnsZones[i]
    name: '${name}-link'
    location: 'global'
    tags: tags
    properties: {
      registrationEnabled: false
      virtualNetwork: {
        id: vnet.id
      }
    }
  }
]

resource endpoints 'Microsoft.Network/privateEndpoints@2024-05-01' = [
  for service in storageServices: {
    name: 'pe-${storageAccountName}-${service}'
    location: location
    tags: tags
    properties: {
      subnet: {
        id: vnet.properties.subnets[1].id
      }
      privateLinkServiceConnections: [
        {
          name: '${service}-connection'
          properties: {
            privateLinkServiceId: storageAccount.id
            groupIds: [
              service
            ]
          }
        }
      ]
    }
  }
]

resource endpointDns 'Microsoft.Network/privateEndpoints/privateDnsZoneGroups@2024-05-01' = [
  for (service, i) in storageServices: {
    parent: endpoints[i]
    name: 'default'
    properties: {
      privateDnsZoneConfigs: [
        {
          name: service
          properties: {
            privateDnsZoneId: dnsZones[i].id
          }
        }
      ]
    }
  }
]

output appSubnetId string = vnet.properties.subnets[0].id
output outboundIpAddress string = outboundIp.properties.ipAddress
