# Installs spatialgen-sync as a Windows service with WinSW.
# Run in an elevated PowerShell from the folder holding spatialgen-sync.exe,
# spatialgen-sync-service.exe (WinSW) and spatialgen-sync-service.xml.
#
#   .\install.ps1 -ApiKey (Read-Host -AsSecureString "SpatialGen API key")
#
# Watch folders on a file server are written as UNC paths in config.toml,
# e.g. path = '\\renderfs\exports\spatial' (TOML literal strings keep the
# backslashes), with poll = "15s": SMB shares send no change events. The
# service account needs read (and for after_upload = "move"/"delete", write)
# access to the share; LocalSystem has none on remote shares, so use a domain
# service account (-Credential).
param(
    [Parameter(Mandatory = $true)][System.Security.SecureString]$ApiKey,
    [System.Management.Automation.PSCredential]$Credential,
    [string]$InstallDir = "$env:ProgramFiles\spatialgen-sync",
    [string]$DataDir = "$env:ProgramData\spatialgen-sync"
)
$ErrorActionPreference = "Stop"

New-Item -ItemType Directory -Force -Path $InstallDir, $DataDir, "$DataDir\logs" | Out-Null
Copy-Item -Force spatialgen-sync.exe, spatialgen-sync-service.exe -Destination $InstallDir
Copy-Item -Force spatialgen-sync.xml -Destination "$InstallDir\spatialgen-sync-service.xml"

# The key file: readable by SYSTEM, Administrators and the service account only.
$keyFile = Join-Path $DataDir "api-key"
$plain = [Runtime.InteropServices.Marshal]::PtrToStringBSTR([Runtime.InteropServices.Marshal]::SecureStringToBSTR($ApiKey))
Set-Content -NoNewline -Path $keyFile -Value $plain
$acl = New-Object System.Security.AccessControl.FileSecurity
$acl.SetAccessRuleProtection($true, $false)
$principals = @("NT AUTHORITY\SYSTEM", "BUILTIN\Administrators")
if ($Credential) { $principals += $Credential.UserName }
foreach ($p in $principals) {
    $acl.AddAccessRule((New-Object System.Security.AccessControl.FileSystemAccessRule($p, "Read", "Allow")))
}
Set-Acl -Path $keyFile -AclObject $acl

$config = Join-Path $DataDir "config.toml"
if (-not (Test-Path $config)) {
    Copy-Item config.example.toml $config
    Write-Host "Edit $config (watch folders, journal path), then start the service."
}

& "$InstallDir\spatialgen-sync.exe" check --config $config
if ($LASTEXITCODE -ne 0) { Write-Warning "config check failed; fix $config before starting" }

& "$InstallDir\spatialgen-sync-service.exe" install
if ($Credential) {
    $svc = Get-CimInstance Win32_Service -Filter "Name='spatialgen-sync'"
    $svc | Invoke-CimMethod -MethodName Change -Arguments @{ StartName = $Credential.UserName; StartPassword = $Credential.GetNetworkCredential().Password } | Out-Null
}
Write-Host "Installed. Start with: Start-Service spatialgen-sync"
