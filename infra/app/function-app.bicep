// The importer's Function App on Flex Consumption: Python 3.11, running as one user-assigned managed identity
// that it also uses to fetch its own deployment package, to reach host storage (identity-based
// AzureWebJobsStorage), Key Vault and Application Insights. No app setting holds a secret: secrets stay in Key
// Vault and are read by name at run time.

@description('Name of the Function App.')
param name string

@description('Azure region.')
param location string

@description('Tags for the app; the azd-service-name tag is added here.')
param tags object = {}

@description('Service name in azure.yaml; azd finds the app by the azd-service-name tag.')
param serviceName string

@description('Resource id of the Flex Consumption plan.')
param planId string

@description('Resource id of the user-assigned managed identity the app runs as.')
param identityId string

@description('Client id of that identity (for SDKs and identity-based connections).')
param identityClientId string

@description('Name of the storage account for host storage, the package container, the queue and the state table.')
param storageAccountName string

@description('Blob container the app package is deployed to.')
param deploymentContainerName string

@description('Application Insights connection string (an address; ingestion needs an Entra ID token).')
param applicationInsightsConnectionString string

@description('App settings of the importer itself (KEY_VAULT_URL, INGEST_*, schedules) as name/value pairs. Never secret values.')
param appSettings array

@description('Memory of one instance in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Upper bound of instances the app scales out to (mailboxes processed in parallel across instances).')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 100

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

// Settings of the platform, the same for every deployment.
var platformSettings = [
  // Host storage through the identity: no AzureWebJobsStorage connection string, no account key.
  {
    name: 'AzureWebJobsStorage__credential'
    value: 'managedidentity'
  }
  {
    name: 'AzureWebJobsStorage__clientId'
    value: identityClientId
  }
  {
    name: 'AzureWebJobsStorage__blobServiceUri'
    value: storage.properties.primaryEndpoints.blob
  }
  {
    name: 'AzureWebJobsStorage__queueServiceUri'
    value: storage.properties.primaryEndpoints.queue
  }
  {
    name: 'AzureWebJobsStorage__tableServiceUri'
    value: storage.properties.primaryEndpoints.table
  }
  // DefaultAzureCredential (Key Vault, Table Storage, blob leases) picks this identity.
  {
    name: 'AZURE_CLIENT_ID'
    value: identityClientId
  }
  // Telemetry with Entra ID: App Insights local auth is off.
  {
    name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'
    value: applicationInsightsConnectionString
  }
  {
    name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING'
    value: 'ClientId=${identityClientId};Authorization=AAD'
  }
]

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
  tags: union(tags, { 'azd-service-name': serviceName })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    //checkov:skip=CKV_AZURE_17: Callers of the HTTP endpoints authenticate with a function key over HTTPS; client certificates are not part of the product.
    //checkov:skip=CKV_AZURE_212: numberOfWorkers does not apply to Flex Consumption; the platform scales instances per function (maximumInstanceCount).
    //checkov:skip=CKV_AZURE_213: Flex Consumption has no App Service health check; liveness is watched by the heartbeat alert (app/alerts.bicep).
    //checkov:skip=CKV_AZURE_78: Flex Consumption has no FTP endpoint at all and rejects the ftpsState property that this check looks for (Microsoft's Flex Consumption plan deprecations list).
    //checkov:skip=CKV_AZURE_222: The HTTP endpoints (test-login, import) must be reachable by the administrator; they require a function key. Private access needs VNet integration, see docs/DEPLOY.md "Network hardening".
    serverFarmId: planId
    httpsOnly: true
    publicNetworkAccess: 'Enabled'
    // Flex Consumption rejects several siteConfig properties other plans take (ftpsState, alwaysOn, linuxFxVersion...,
    // see tests/infra/test_flex_consumption.py): FTP is not offered on Flex at all, the runtime is functionAppConfig's.
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      http20Enabled: true
      appSettings: concat(platformSettings, appSettings)
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'
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
}

output id string = functionApp.id
output name string = functionApp.name
output defaultHostName string = functionApp.properties.defaultHostName
