# Installs spatialgen-sync as a Windows service with WinSW.
# Run in an elevated PowerShell from a folder holding the four files it copies:
#   spatialgen-sync.exe          the agent
#   spatialgen-sync-service.exe  WinSW-x64.exe, renamed
#   spatialgen-sync.xml          from packaging/windows (installed as spatialgen-sync-service.xml)
#   config.example.toml          installed as %ProgramData%\spatialgen-sync\config.toml unless one exists
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
# The definition names %ProgramData%\spatialgen-sync (the config, the working
# directory, the logs); another -DataDir is written into the installed copy.
$definition = Get-Content -Raw spatialgen-sync.xml
if ($DataDir -ne "$env:ProgramData\spatialgen-sync") {
    $definition = $definition.Replace('%ProgramData%\spatialgen-sync', $DataDir)
}
Set-Content -NoNewline -Path "$InstallDir\spatialgen-sync-service.xml" -Value $definition

# The key file: readable by SYSTEM and the service account, writable by
# Administrators (so that running this again can replace the key), and no
# one else. The file is created empty and its ACL set (inheritance cut, so
# no rule from the folder applies) before the key is written into it: the
# key is never on disk under a broader ACL.
$keyFile = Join-Path $DataDir "api-key"
New-Item -ItemType File -Force -Path $keyFile | Out-Null
$acl = New-Object System.Security.AccessControl.FileSecurity
$acl.SetAccessRuleProtection($true, $false)
$principals = @("NT AUTHORITY\SYSTEM")
if ($Credential) { $principals += $Credential.UserName }
foreach ($p in $principals) {
    $acl.AddAccessRule((New-Object System.Security.AccessControl.FileSystemAccessRule($p, "Read", "Allow")))
}
$acl.AddAccessRule((New-Object System.Security.AccessControl.FileSystemAccessRule("BUILTIN\Administrators", "FullControl", "Allow")))
Set-Acl -Path $keyFile -AclObject $acl
$bstr = [Runtime.InteropServices.Marshal]::SecureStringToBSTR($ApiKey)
try {
    $plain = [Runtime.InteropServices.Marshal]::PtrToStringBSTR($bstr)
    Set-Content -NoNewline -Path $keyFile -Value $plain
} finally {
    [Runtime.InteropServices.Marshal]::ZeroFreeBSTR($bstr)
    Remove-Variable plain -ErrorAction SilentlyContinue
}

$config = Join-Path $DataDir "config.toml"
if (-not (Test-Path $config)) {
    Copy-Item config.example.toml $config
    # Its journal ('journal.sqlite3') and api_key_file ('api-key') are relative
    # to its folder: $DataDir, where the key was just written.
    Write-Host "Edit the [[watch]] folders in $config, then start the service."
}

& "$InstallDir\spatialgen-sync.exe" check --config $config
if ($LASTEXITCODE -ne 0) { Write-Warning "config check failed; fix $config before starting" }

& "$InstallDir\spatialgen-sync-service.exe" install
if ($Credential) {
    $svc = Get-CimInstance Win32_Service -Filter "Name='spatialgen-sync'"
    $svc | Invoke-CimMethod -MethodName Change -Arguments @{ StartName = $Credential.UserName; StartPassword = $Credential.GetNetworkCredential().Password } | Out-Null
}
Write-Host "Installed. Start with: Start-Service spatialgen-sync"
