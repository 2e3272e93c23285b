// The user-assigned managed identity the Function App runs as. One identity for everything the app reaches
// (storage, Key Vault, Application Insights, optionally Microsoft Graph through a federated credential), so
// its client id can be given to every SDK and its rights read from one list of role assignments.

@description('Name of the user-assigned managed identity.')
param name string

@description('Azure region.')
param location string

@description('Tags for the identity.')
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
