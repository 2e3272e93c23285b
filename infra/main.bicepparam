// Parameters for both `azd up` (azd exports its environment, so AZURE_ENV_NAME and AZURE_PRINCIPAL_ID come from
// it) and `az deployment group create --parameters infra/main.bicepparam` (export the variables yourself).
// No secret belongs here: secrets go into Key Vault (docs/DEPLOY.md).
using './main.bicep'

param environmentName = readEnvironmentVariable('AZURE_ENV_NAME', 'doc2-ingest')

// Required: who receives the alerts. azd: `azd env set ALERT_EMAIL ops@example.com`.
param alertEmail = readEnvironmentVariable('ALERT_EMAIL', '')

param graphTimerSchedule = readEnvironmentVariable('GRAPH_TIMER_SCHEDULE', '0 */5 * * * *')
param mailTimerSchedule = readEnvironmentVariable('MAIL_TIMER_SCHEDULE', '0 */5 * * * *')
param runIntervalMinutes = int(readEnvironmentVariable('RUN_INTERVAL_MINUTES', '5'))

param doc2BaseUrl = readEnvironmentVariable('DOC2_BASE_URL', '')
param storageSkuName = readEnvironmentVariable('STORAGE_SKU_NAME', 'Standard_GRS')

// The person deploying gets "Key Vault Secrets Officer" to store the secrets; azd sets AZURE_PRINCIPAL_ID.
param adminPrincipalId = readEnvironmentVariable('AZURE_PRINCIPAL_ID', '')
param adminPrincipalType = readEnvironmentVariable('AZURE_PRINCIPAL_TYPE', 'User')

param secretlessGraph = bool(readEnvironmentVariable('SECRETLESS_GRAPH', 'false'))
