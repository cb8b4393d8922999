// blockflash: the single binary. Subcommands are added by src/cli/*_command.cpp.
#include <cstdio>

int main(int argc, char** argv) {
  std::fprintf(stderr, "blockflash: no subcommands yet\n");
  return 1;
}
