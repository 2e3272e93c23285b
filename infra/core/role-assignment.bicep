// The one role-assignment module. It grants one built-in role to one principal on one resource, scoped to that
// resource (not the resource group), so each right is as narrow as the resource it is about. The assignment's
// name is guid(scope, principal, role): deterministic, so a redeployment finds the assignment it made before.

@description('Kind of the resource the role is granted on.')
@allowed([
  'storageAccount'
  'keyVault'
  'applicationInsights'
])
param targetKind string

@description('Name of that resource, in this resource group.')
param targetName string

@description('Object (principal) id of the identity that receives the role.')
param principalId string

@description('Kind of principal; empty lets Azure find out (slower to replicate, needed for a user of unknown kind).')
@allowed([
  'ServicePrincipal'
  'User'
  'Group'
  ''
])
param principalType string = 'ServicePrincipal'

@description('GUID of the built-in role definition.')
param roleDefinitionId string

var roleDefinitionResourceId = subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleDefinitionId)
var assignmentProperties = {
  principalId: principalId
  principalType: empty(principalType) ? null : principalType
  roleDefinitionId: roleDefinitionResourceId
}

resource storageAccount 'Microsoft.Storage/storageAccounts@2023-05-01' existing = if (targetKind == 'storageAccount') {
  name: targetName
}

resource keyVault 'Microsoft.KeyVault/vaults@2023-07-01' existing = if (targetKind == 'keyVault') {
  name: targetName
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = if (targetKind == 'applicationInsights') {
  name: targetName
}

resource onStorageAccount 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (targetKind == 'storageAccount') {
  name: guid(storageAccount.id, principalId, roleDefinitionResourceId)
  scope: storageAccount
  properties: assignmentProperties
}

resource onKeyVault 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (targetKind == 'keyVault') {
  name: guid(keyVault.id, principalId, roleDefinitionResourceId)
  scope: keyVault
  properties: assignmentProperties
}

resource onApplicationInsights 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (targetKind == 'applicationInsights') {
  name: guid(applicationInsights.id, principalId, roleDefinitionResourceId)
  scope: applicationInsights
  properties: assignmentProperties
}
