// doc2-mail-ingest in Azure: one resource group holding the Function App (Flex Consumption, Python 3.11), its
// managed identity, storage (host, package, queue, state table), Key Vault, monitoring and alerts.
//
// Deploy with `azd up` (azure.yaml) or `az deployment group create` with main.bicepparam; docs/DEPLOY.md walks
// through both. The template is resource-group scoped so that the same file serves both ways and so that an
// administrator who owns only a resource group can deploy it.

targetScope = 'resourceGroup'

@minLength(1)
@maxLength(64)
@description('Name of the environment (azd: AZURE_ENV_NAME); part of the hash that makes resource names unique.')
param environmentName string

// The regions that offer Flex Consumption (`az functionapp list-flexconsumption-locations`), as in Microsoft's
// Flex Consumption azd template (Azure-Samples/functions-quickstart-python-http-azd, infra/main.bicep).
@description('Azure region of every resource; must offer Flex Consumption. Defaults to the resource group\'s.')
@allowed([
  'australiaeast'
  'australiasoutheast'
  'brazilsouth'
  'canadacentral'
  'centralindia'
  'centralus'
  'eastasia'
  'eastus'
  'eastus2'
  'francecentral'
  'germanywestcentral'
  'italynorth'
  'japaneast'
  'koreacentral'
  'northcentralus'
  'northeurope'
  'norwayeast'
  'southafricanorth'
  'southcentralus'
  'southeastasia'
  'southindia'
  'spaincentral'
  'swedencentral'
  'uaenorth'
  'uksouth'
  'ukwest'
  'westcentralus'
  'westeurope'
  'westus'
  'westus2'
  'westus3'
])
@metadata({
  azd: {
    type: 'location'
  }
})
param location string = resourceGroup().location

@description('E-mail address that receives the alerts (failed messages, failing account, no recent run); empty for none (the alerts still fire and show in Azure Monitor).')
param alertEmail string = ''

@description('Timer schedule (NCRONTAB, six fields) of the Microsoft Graph accounts.')
param graphTimerSchedule string = '0 */5 * * * *'

@description('Timer schedule (NCRONTAB, six fields) of the IMAP and POP3 accounts.')
param mailTimerSchedule string = '0 */5 * * * *'

@description('Minutes between two runs of the schedules above; the heartbeat alert fires after twice this without a run.')
@minValue(1)
@maxValue(720)
param runIntervalMinutes int = 5

@description('Queue that carries one job per account.')
param ingestQueueName string = 'ingest-jobs'

@description('Table of the state store.')
param stateTableName string = 'ingeststate'

@description('Path of the accounts file in the deployed app (it is deployed with the code as accounts.yaml).')
param ingestConfigPath string = '/home/site/wwwroot/accounts.yaml'

@description('DOC² API base; empty keeps doc2.base_url of the accounts file.')
param doc2BaseUrl string = ''

@description('Public https base URL where Graph delivers change notifications (a custom domain or front door); empty: the app\'s own default host name (WEBSITE_HOSTNAME).')
param publicBaseUrl string = ''

@description('Upper bound of Function App instances.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 100

@description('Storage replication; see core/storage.bicep.')
param storageSkuName string = 'Standard_GRS'

@description('Object id of the administrator (azd: AZURE_PRINCIPAL_ID) who gets "Key Vault Secrets Officer" to put the secrets in; empty for none. A service principal running `azd provision` in CI is one too.')
param adminPrincipalId string = ''

@description('Kind of that principal (azd: AZURE_PRINCIPAL_TYPE): User, Group or ServicePrincipal; empty lets Azure find out.')
@allowed([
  'User'
  'Group'
  'ServicePrincipal'
  ''
])
param adminPrincipalType string = ''

@description('Secretless Microsoft Graph sign-in: output what the app registration\'s federated credential needs (issuer, subject, audience). The credential itself is created in Entra ID, see docs/DEPLOY.md.')
param secretlessGraph bool = false

var abbrs = loadJsonContent('./abbreviations.json')
var resourceToken = toLower(uniqueString(subscription().id, resourceGroup().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
  application: 'doc2-mail-ingest'
}
var serviceName = 'ingest'
var functionAppName = '${abbrs.webSitesFunctions}${serviceName}-${resourceToken}'
var deploymentContainerName = 'app-package-${resourceToken}'

// Built-in role definitions (ids are the same in every tenant).
var storageBlobDataOwnerRoleId = 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
var storageQueueDataContributorRoleId = '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
var storageTableDataContributorRoleId = '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
var keyVaultSecretsUserRoleId = '4633458b-17de-408a-b874-0445c86b69e6'
var keyVaultSecretsOfficerRoleId = 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7'
var monitoringMetricsPublisherRoleId = '3913510d-42f4-4e42-8a64-420c390055eb'

// Everything the app's identity may do, in one table: the role, and the one resource it is granted on (target).
// tests/infra/test_roles.py derives these grants, compares them with what the code and the Functions host need
// (data actions of the built-in role definitions), and docs/DEPLOY.md explains each.
var appRoleAssignments = [
  {
    // host storage (AzureWebJobsStorage: timers, keys, host locks), the deployment package, blob leases per account
    target: 'storage'
    roleDefinitionId: storageBlobDataOwnerRoleId
  }
  {
    // fan-out queue, its poison queue, the queue trigger
    target: 'storage'
    roleDefinitionId: storageQueueDataContributorRoleId
  }
  {
    // state table
    target: 'storage'
    roleDefinitionId: storageTableDataContributorRoleId
  }
  {
    // read secret values by name; no listing of keys or certificates, no writes
    target: 'keyVault'
    roleDefinitionId: keyVaultSecretsUserRoleId
  }
  {
    // device_code accounts save their refreshed token caches; this vault holds nothing else
    target: 'tokenCacheVault'
    roleDefinitionId: keyVaultSecretsOfficerRoleId
  }
  {
    // send telemetry with Entra ID auth (App Insights local auth is off)
    target: 'applicationInsights'
    roleDefinitionId: monitoringMetricsPublisherRoleId
  }
]

module identity './core/identity.bicep' = {
  name: 'identity'
  params: {
    name: '${abbrs.managedIdentityUserAssignedIdentities}${serviceName}-${resourceToken}'
    location: location
    tags: tags
  }
}

module monitoring './core/monitoring.bicep' = {
  name: 'monitoring'
  params: {
    logAnalyticsName: '${abbrs.operationalInsightsWorkspaces}${resourceToken}'
    applicationInsightsName: '${abbrs.insightsComponents}${resourceToken}'
    location: location
    tags: tags
  }
}

module storage './core/storage.bicep' = {
  name: 'storage'
  params: {
    name: '${abbrs.storageStorageAccounts}${resourceToken}'
    location: location
    tags: tags
    skuName: storageSkuName
    deploymentContainerName: deploymentContainerName
    queueName: ingestQueueName
    stateTableName: stateTableName
  }
}

module keyVault './core/key-vault.bicep' = {
  name: 'key-vault'
  params: {
    name: '${abbrs.keyVaultVaults}${resourceToken}'
    location: location
    tags: tags
    logAnalyticsWorkspaceId: monitoring.outputs.logAnalyticsId
  }
}

// The token caches of device_code accounts (refresh tokens), apart from the secrets the administrator puts in: the
// app may write here, and only here. Same protection as the vault above (RBAC, soft delete, purge protection,
// audit log). A vault of its own rather than roles on single secrets: a template that declared the cache secrets
// would overwrite the saved sign-ins with placeholders on every provisioning.
module tokenCacheVault './core/key-vault.bicep' = {
  name: 'token-cache-vault'
  params: {
    name: '${abbrs.keyVaultVaults}tc-${resourceToken}'
    location: location
    tags: tags
    logAnalyticsWorkspaceId: monitoring.outputs.logAnalyticsId
  }
}

module plan './core/flex-plan.bicep' = {
  name: 'plan'
  params: {
    name: '${abbrs.webServerFarms}${resourceToken}'
    location: location
    tags: tags
  }
}

module appRoles './core/role-assignment.bicep' = [for assignment in appRoleAssignments: {
  name: 'role-${assignment.target}-${take(assignment.roleDefinitionId, 8)}'
  params: {
    targetKind: (assignment.target == 'storage') ? 'storageAccount' : ((assignment.target == 'applicationInsights') ? 'applicationInsights' : 'keyVault')
    targetName: (assignment.target == 'storage') ? storage.outputs.name : ((assignment.target == 'keyVault') ? keyVault.outputs.name : ((assignment.target == 'tokenCacheVault') ? tokenCacheVault.outputs.name : monitoring.outputs.applicationInsightsName))
    principalId: identity.outputs.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: assignment.roleDefinitionId
  }
}]

module adminSecretsOfficer './core/role-assignment.bicep' = if (!empty(adminPrincipalId)) {
  name: 'role-admin-secrets-officer'
  params: {
    targetKind: 'keyVault'
    targetName: keyVault.outputs.name
    principalId: adminPrincipalId
    principalType: adminPrincipalType
    roleDefinitionId: keyVaultSecretsOfficerRoleId
  }
}

// `python -m ingest signin` on the administrator's machine stores the first token cache of a device_code account.
module adminTokenCacheOfficer './core/role-assignment.bicep' = if (!empty(adminPrincipalId)) {
  name: 'role-admin-token-cache-officer'
  params: {
    targetKind: 'keyVault'
    targetName: tokenCacheVault.outputs.name
    principalId: adminPrincipalId
    principalType: adminPrincipalType
    roleDefinitionId: keyVaultSecretsOfficerRoleId
  }
}

module functionApp './app/function-app.bicep' = {
  name: 'function-app'
  // The host reads its storage through the identity from the first start: grant the roles first.
  dependsOn: [
    appRoles
  ]
  params: {
    name: functionAppName
    location: location
    tags: tags
    serviceName: serviceName
    planId: plan.outputs.id
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    storageAccountName: storage.outputs.name
    deploymentContainerName: deploymentContainerName
    applicationInsightsConnectionString: monitoring.outputs.applicationInsightsConnectionString
    maximumInstanceCount: maximumInstanceCount
    appSettings: concat([
      {
        name: 'INGEST_CONFIG'
        value: ingestConfigPath
      }
      {
        name: 'KEY_VAULT_URL'
        value: keyVault.outputs.uri
      }
      {
        name: 'TOKEN_CACHE_VAULT_URL'
        value: tokenCacheVault.outputs.uri
      }
      {
        name: 'INGEST_STATE_URL'
        value: 'azuretable://${storage.outputs.name}.table.${environment().suffixes.storage}/${stateTableName}'
      }
      {
        name: 'INGEST_QUEUE_NAME'
        value: ingestQueueName
      }
      {
        name: 'GRAPH_TIMER_SCHEDULE'
        value: graphTimerSchedule
      }
      {
        name: 'MAIL_TIMER_SCHEDULE'
        value: mailTimerSchedule
      }
    ], empty(doc2BaseUrl) ? [] : [
      {
        name: 'DOC2_BASE_URL'
        value: doc2BaseUrl
      }
    ], empty(publicBaseUrl) ? [] : [
      {
        name: 'INGEST_PUBLIC_BASE_URL'
        value: publicBaseUrl
      }
    ])
  }
}

module alerts './app/alerts.bicep' = {
  name: 'alerts'
  params: {
    namePrefix: '${abbrs.insightsScheduledQueryRules}${resourceToken}-'
    actionGroupName: '${abbrs.insightsActionGroups}${resourceToken}'
    location: location
    tags: tags
    applicationInsightsId: monitoring.outputs.applicationInsightsId
    alertEmail: alertEmail
    runIntervalMinutes: runIntervalMinutes
  }
}

module workbook './app/workbook.bicep' = {
  name: 'workbook'
  params: {
    location: location
    tags: tags
    applicationInsightsId: monitoring.outputs.applicationInsightsId
    runIntervalMinutes: runIntervalMinutes
  }
}

// azd reads these into the environment (.azure/<env>/.env); docs/DEPLOY.md uses them.
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = resourceGroup().name
output SERVICE_INGEST_NAME string = functionApp.outputs.name
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.name
output AZURE_FUNCTION_APP_URL string = 'https://${functionApp.outputs.defaultHostName}'
output AZURE_KEY_VAULT_NAME string = keyVault.outputs.name
output KEY_VAULT_URL string = keyVault.outputs.uri
output AZURE_TOKEN_CACHE_VAULT_NAME string = tokenCacheVault.outputs.name
output TOKEN_CACHE_VAULT_URL string = tokenCacheVault.outputs.uri
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output APPLICATIONINSIGHTS_NAME string = monitoring.outputs.applicationInsightsName
output MANAGED_IDENTITY_CLIENT_ID string = identity.outputs.clientId
output MANAGED_IDENTITY_PRINCIPAL_ID string = identity.outputs.principalId
// Secretless Graph sign-in: the federated credential to add to the app registration (docs/DEPLOY.md).
output GRAPH_FEDERATED_CREDENTIAL_ISSUER string = secretlessGraph ? '${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0' : ''
output GRAPH_FEDERATED_CREDENTIAL_SUBJECT string = secretlessGraph ? identity.outputs.principalId : ''
output GRAPH_FEDERATED_CREDENTIAL_AUDIENCE string = secretlessGraph ? 'api://AzureADTokenExchange' : ''
