# A stub package set for the tests: `import ./. {}` gives what nanoclaw uses of nixpkgs
# (`buildEnv` and packages by attribute name), built offline from the host's static busybox
# (Debian's busybox-static), so the programs run in a sandbox with no host /usr or /lib.
{ busybox ? "/bin/busybox", ... }:
let
  system = builtins.currentSystem;
  sh = script: name: extra:
    builtins.derivation ({
      inherit name system;
      builder = busybox;
      args = [ "sh" "-euc" script ];
      PATH = "";
      BB = busybox;
    } // extra);

  # The base: one static busybox in its own store path; every other package links into it.
  busyboxPkg = sh ''
    $BB mkdir -p $out/bin
    $BB cp $BB $out/bin/busybox
    for a in $($BB --list); do [ -e $out/bin/$a ] || $BB ln -s busybox $out/bin/$a; done
  '' "busybox-stub" { };

  # A package whose programs are busybox applets (`applets`) and/or small scripts that say
  # which package they come from (`scripts`, run by the busybox shell: a real closure edge).
  pkg = name: applets: scripts: sh ''
    $BB mkdir -p $out/bin
    for a in ${toString applets}; do $BB ln -s ${busyboxPkg}/bin/busybox $out/bin/$a; done
    for s in ${toString scripts}; do
      printf '#!${busyboxPkg}/bin/sh\necho "%s from ${name}: $*"\n' "$s" > $out/bin/$s
      $BB chmod 555 $out/bin/$s
    done
  '' name { };

  shell = name: sh ''
    $BB mkdir -p $out/bin
    $BB ln -s ${busyboxPkg}/bin/busybox $out/bin/sh
    $BB ln -s ${busyboxPkg}/bin/busybox $out/bin/ash
    printf '#!${busyboxPkg}/bin/sh\nexec ${busyboxPkg}/bin/sh "$@"\n' > $out/bin/bash
    $BB chmod 555 $out/bin/bash
  '' name { };

  buildEnv = { name, paths, ... }: sh ''
    $BB mkdir -p $out/bin
    for p in $paths; do
      for f in $p/bin/*; do
        b=''${f##*/}
        [ -e $out/bin/$b ] || $BB ln -s $f $out/bin/$b
      done
    done
  '' name { inherit paths; };
in
{
  inherit buildEnv;
  busybox = busyboxPkg;
  # Debian's static busybox has no bash applet: bash is its sh under the name.
  bash = shell "bash-stub";
  bashInteractive = shell "bash-interactive-stub";
  coreutils = pkg "coreutils-stub" [ "ls" "cat" "echo" "env" "id" "mkdir" "rm" "cp" "mv" "head" "tail" "wc" "sort" "true" "false" "test" "[" "printf" "uname" "readlink" "stat" "touch" "sleep" "basename" "dirname" "chmod" ] [ ];
  cacert = pkg "cacert-stub" [ ] [ ];
  findutils = pkg "findutils-stub" [ "find" "xargs" ] [ ];
  gnugrep = pkg "gnugrep-stub" [ "grep" "egrep" "fgrep" ] [ ];
  gnused = pkg "gnused-stub" [ "sed" ] [ ];
  gawk = pkg "gawk-stub" [ "awk" ] [ ];
  diffutils = pkg "diffutils-stub" [ "diff" "cmp" ] [ ];
  gnutar = pkg "gnutar-stub" [ "tar" ] [ ];
  gzip = pkg "gzip-stub" [ "gzip" "gunzip" "zcat" ] [ ];
  curl = pkg "curl-stub" [ "wget" ] [ "curl" ];
  netcat = pkg "netcat-stub" [ "nc" ] [ ];
  dnsutils = pkg "dnsutils-stub" [ "nslookup" ] [ "dig" ];
  jq = pkg "jq-stub" [ ] [ "jq" ];
  ripgrep = pkg "ripgrep-stub" [ ] [ "rg" ];
  git = pkg "git-stub" [ ] [ "git" ];
  gcc = pkg "gcc-stub" [ ] [ "gcc" "cc" ];
  gnumake = pkg "gnumake-stub" [ ] [ "make" ];
  nodejs = pkg "nodejs-stub" [ ] [ "node" "npm" ];
  python3 = pkg "python3-stub" [ ] [ "python3" ];
  python312 = pkg "python312-stub" [ ] [ "python3.12" ];
  rustc = pkg "rustc-stub" [ ] [ "rustc" ];
  cargo = pkg "cargo-stub" [ ] [ "cargo" ];
  # An attribute whose build fails, for the tests of a failed build.
  broken = sh "echo this package does not build >&2; exit 1" "broken-stub" { };
}
