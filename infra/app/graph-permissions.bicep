// Microsoft Graph application permissions for licshift's managed identity, via the Microsoft Graph
// Bicep extension (GA; needs Bicep CLI >= 0.36.1, which azd >= 1.17.0 bundles). The extension is
// named by its alias in infra/bicepconfig.json (microsoftGraphV1 = the v1.0 types, version pinned
// there). Kept in its own small file, so newer syntax here can never hide the resource-heavy files
// from offline checks.
//
// Used only when grantGraphPermissions is true. WHO CAN DEPLOY THIS: creating appRoleAssignedTo needs
// AppRoleAssignment.ReadWrite.All and Application.Read.All for the deployer (in practice a Privileged
// Role Administrator or Global Administrator, or a CI principal holding those application
// permissions); without them the whole deployment fails with Authorization_RequestDenied. By default
// infra/hooks/postprovision grants the same roles after the deployment instead, or prints the
// commands for an admin (the README's "Deployment" section).
//
// App roles are resolved by value from the Microsoft Graph service principal, not hard-coded. The
// list comes from main.bicep (graphAppRoles); for reference, their well-known ids:
//   LicenseAssignment.ReadWrite.All  5facf0c1-8979-4e95-abcf-ff3d079771c0  assignLicense (remove, restore)
//   User.Read.All                    df021288-bdef-4463-88db-98f22de89214  a user's licenseAssignmentStates
//   GroupMember.Read.All             98830695-27a2-44f7-8c18-0c3ebc9698f6  group processing state, members
//   LicenseAssignment.Read.All       (resolved by value)                   GET /subscribedSkus: Microsoft's
//     permission table for it names LicenseAssignment.Read.All as least privileged and does not list
//     LicenseAssignment.ReadWrite.All among the higher ones, so it stays (it adds no privilege).
extension microsoftGraphV1

@description('Principal (object) id of the managed identity\'s service principal.')
param principalId string

@description('Microsoft Graph application permissions (app role values) to grant.')
param appRoleNames array

// Microsoft Graph's well-known application id.
resource graph 'Microsoft.Graph/servicePrincipals@v1.0' existing = {
  appId: '00000003-0000-0000-c000-000000000000'
}

resource grants 'Microsoft.Graph/appRoleAssignedTo@v1.0' = [
  for roleName in appRoleNames: {
    principalId: principalId
    resourceId: graph.id
    appRoleId: filter(graph.appRoles, role => role.value == roleName)[0].id
  }
]

output grantedAppRoles array = appRoleNames
