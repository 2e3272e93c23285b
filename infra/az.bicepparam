// Parameters for `az deployment group create --parameters infra/az.bicepparam` (export the variables yourself,
// docs/DEPLOY.md section 3). azd reads infra/main.parameters.json instead: azd would prefer a file named
// main.bicepparam over main.parameters.json, hence this name. Both files set the same parameters from the same
// variables (tests/infra/test_azd.py). No secret belongs here: secrets go into Key Vault (docs/DEPLOY.md).
using './main.bicep'

param environmentName = readEnvironmentVariable('AZURE_ENV_NAME', 'doc2-ingest')

// Who receives the alerts; empty for no e-mail.
param alertEmail = readEnvironmentVariable('ALERT_EMAIL', '')

param graphTimerSchedule = readEnvironmentVariable('GRAPH_TIMER_SCHEDULE', '0 */5 * * * *')
param mailTimerSchedule = readEnvironmentVariable('MAIL_TIMER_SCHEDULE', '0 */5 * * * *')
param runIntervalMinutes = int(readEnvironmentVariable('RUN_INTERVAL_MINUTES', '5'))

param doc2BaseUrl = readEnvironmentVariable('DOC2_BASE_URL', '')
param storageSkuName = readEnvironmentVariable('STORAGE_SKU_NAME', 'Standard_GRS')

// The person (or CI service principal) deploying gets "Key Vault Secrets Officer" to store the secrets.
param adminPrincipalId = readEnvironmentVariable('AZURE_PRINCIPAL_ID', '')
param adminPrincipalType = readEnvironmentVariable('AZURE_PRINCIPAL_TYPE', '')

param secretlessGraph = bool(readEnvironmentVariable('SECRETLESS_GRAPH', 'false'))
