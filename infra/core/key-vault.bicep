// Key Vault for the secrets the accounts file names (doc2-api-key, graph-client-secret, mailbox passwords...).
// Access is Azure RBAC only (no access policies); the app's identity gets "Key Vault Secrets User" (read secret
// values, nothing else) in main.bicep. Deleted secrets and the vault itself are recoverable for
// softDeleteRetentionInDays, and purge protection means nobody can shorten that.

@description('Name of the vault (3-24 characters, globally unique).')
@minLength(3)
@maxLength(24)
param name string

@description('Azure region.')
param location string

@description('Tags for the vault.')
param tags object = {}

@description('Days a deleted secret or vault stays recoverable.')
@minValue(7)
@maxValue(90)
param softDeleteRetentionInDays int = 90

@description('Log Analytics workspace that receives the vault audit log (who read which secret, when).')
param logAnalyticsWorkspaceId string

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    //checkov:skip=CKV_AZURE_109: The Flex Consumption app has no fixed outbound addresses to allow in a firewall rule; every request needs an Entra ID token and an RBAC role. docs/DEPLOY.md "Network hardening" describes VNet integration with a private endpoint.
    //checkov:skip=CKV_AZURE_189: Same reason as CKV_AZURE_109: without VNet integration the app reaches the vault over its public endpoint.
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: softDeleteRetentionInDays
    enablePurgeProtection: true
    enabledForDeployment: false
    enabledForDiskEncryption: false
    enabledForTemplateDeployment: false
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

resource auditLog 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'audit-to-log-analytics'
  scope: vault
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      {
        categoryGroup: 'audit'
        enabled: true
      }
    ]
  }
}

output id string = vault.id
output name string = vault.name
output uri string = vault.properties.vaultUri
