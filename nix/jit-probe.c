/* Exits 0 when this process may turn writable memory into executable memory, as V8 does for the
 * machine code it compiles; 1 when that is refused (systemd's MemoryDenyWriteExecute=, which
 * nixpkgs' services.ncps sets, or the kernel's PR_SET_MDWE). bin/ncps then runs Node.js with
 * --jitless instead of letting V8 abort. Asking the kernel is cheap and crashes nothing. */
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

int main(void) {
  long size = sysconf(_SC_PAGESIZE);
  void *page = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (page == MAP_FAILED) return 2;
  int refused = mprotect(page, (size_t)size, PROT_READ | PROT_EXEC) != 0;
  munmap(page, (size_t)size);
  return refused ? 1 : 0;
}
