/*
 * bcryptprimitives.dll for Wine 8, which lacks it: Rust's std (1.78+) takes
 * its random bytes from ProcessPrng there, and an .exe without it stops at
 * start ("Library bcryptprimitives.dll not found"). This forwards to
 * RtlGenRandom (advapi32!SystemFunction036), which Wine has. Test use only:
 * scripts/cross/wine-prefix.sh builds it into the test Wine prefix.
 */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len) {
    while (len > 0) {
        ULONG chunk = len > 0x10000000 ? 0x10000000 : (ULONG)len;
        if (!SystemFunction036(data, chunk)) return FALSE;
        data += chunk;
        len -= chunk;
    }
    return TRUE;
}
