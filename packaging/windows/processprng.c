/* bcryptprimitives.dll for Wine 8, harness only: Wine 8 lacks ProcessPrng, which Rust's std (and so
 * cryptography's Rust module) imports on Windows 10+. Real Windows has it; this DLL is never shipped.
 * Built by scripts/windows_env.sh with x86_64-w64-mingw32-gcc and copied into the prefix's system32. */
#include <windows.h>
#include <bcrypt.h>

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    /* BCryptGenRandom takes a ULONG length: feed larger requests in chunks. */
    while (len > 0) {
        ULONG chunk = len > 0x10000000 ? 0x10000000 : (ULONG)len;
        if (BCryptGenRandom(NULL, data, chunk, BCRYPT_USE_SYSTEM_PREFERRED_RNG) != 0)
            return FALSE;
        data += chunk;
        len -= chunk;
    }
    return TRUE;
}
