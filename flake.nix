{
  description = "nanoclaw: a self-hosted chat AI assistant whose agents run in bubblewrap sandboxes";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";
    flake-utils.url = "github:numtide/flake-utils";
  };

  outputs =
    {
      self,
      nixpkgs,
      flake-utils,
    }:
    let
      # bubblewrap and user namespaces: Linux only.
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];

      perSystem =
        system:
        let
          pkgs = nixpkgs.legacyPackages.${system};
          inherit (pkgs) lib;
          python = pkgs.python311;

          # What the agent may run inside the sandbox; mounted read-only with /nix/store.
          agentPython = python.withPackages (ps: [ ps.anthropic ]);
          agent-env = pkgs.buildEnv {
            name = "nanoclaw-agent-env";
            paths = with pkgs; [
              bashInteractive
              coreutils
              findutils
              gnugrep
              gnused
              gawk
              jq
              curl
              git
              agentPython
              ripgrep
              diffutils
              gnutar
              gzip
            ];
          };

          src = lib.fileset.toSource {
            root = ./.;
            fileset = lib.fileset.unions [
              ./pyproject.toml
              ./README.md
              ./nanoclaw
              ./channels
              ./skills
              ./groups
            ];
          };

          nanoclaw = pkgs.python3Packages.buildPythonApplication {
            pname = "nanoclaw";
            version = "0.1.0";
            inherit src;
            pyproject = true; # the current spelling of format = "pyproject"
            build-system = [ pkgs.python3Packages.hatchling ];
            dependencies = with pkgs.python3Packages; [
              aiosqlite
              watchfiles
              anthropic
              croniter
              pydantic
              pydantic-settings
              aiohttp
            ];
            # The daemon starts every agent run with bwrap, under a seccomp filter that
            # nanoclaw/sandbox/seccomp.py compiles with libseccomp (loaded by name through ctypes).
            # Groups' Nix environments build from this flake's pinned nixpkgs unless
            # NANOCLAW_NIXPKGS says otherwise (in the environment or .env), with the host's
            # Nix when it has one (a suffix: its daemon and its version first).
            makeWrapperArgs = [
              "--prefix"
              "PATH"
              ":"
              (lib.makeBinPath [ pkgs.bubblewrap ])
              "--suffix"
              "PATH"
              ":"
              (lib.makeBinPath [ pkgs.nix ])
              "--prefix"
              "LD_LIBRARY_PATH"
              ":"
              (lib.makeLibraryPath [ pkgs.libseccomp ])
              "--set-default"
              "NANOCLAW_FLAKE_NIXPKGS"
              "${nixpkgs}"
            ];
            # Templates and skills, for the NixOS module to seed a fresh home with.
            postInstall = ''
              mkdir -p $out/share/nanoclaw
              cp -r ${src}/skills ${src}/groups $out/share/nanoclaw/
            '';
            # The test suite needs user namespaces and local chat servers: run it in the dev shell.
            doCheck = false;
            pythonImportsCheck = [ "nanoclaw" ];
            passthru = { inherit agent-env; };
            meta = {
              description = "Self-hosted chat AI assistant with per-group bubblewrap sandboxes";
              license = lib.licenses.mit;
              mainProgram = "nanoclaw";
              platforms = lib.platforms.linux;
            };
          };
        in
        {
          packages = {
            default = nanoclaw;
            inherit nanoclaw agent-env;
          };

          devShells.default = pkgs.mkShell {
            packages = [
              python
              pkgs.uv
              pkgs.bubblewrap
              pkgs.ruff
              pkgs.mypy
              pkgs.prosody
              pkgs.git
              pkgs.sqlite
            ];
            # uv uses the shell's interpreter and never downloads its own.
            UV_PYTHON = "${python}/bin/python3";
            UV_PYTHON_DOWNLOADS = "never";
            # The sandbox's seccomp filter is compiled by libseccomp, loaded through ctypes.
            LD_LIBRARY_PATH = lib.makeLibraryPath [ pkgs.libseccomp ];
            shellHook = ''
              echo "nanoclaw dev shell: uv sync && uv run pytest"
            '';
          };
        };
    in
    flake-utils.lib.eachSystem systems perSystem
    // {
      nixosModules.default =
        {
          config,
          lib,
          pkgs,
          ...
        }:
        let
          cfg = config.services.nanoclaw;
          system = pkgs.stdenv.hostPlatform.system;
          share = "${cfg.package}/share/nanoclaw";
        in
        {
          options.services.nanoclaw = {
            enable = lib.mkEnableOption "the nanoclaw chat assistant daemon";

            package = lib.mkOption {
              type = lib.types.package;
              default = self.packages.${system}.default;
              defaultText = lib.literalExpression "nanoclaw.packages.\${system}.default";
              description = "The nanoclaw package to run.";
            };

            environmentFile = lib.mkOption {
              type = lib.types.nullOr lib.types.path;
              default = null;
              example = "/run/secrets/nanoclaw.env";
              description = ''
                File of KEY=value settings (ANTHROPIC_API_KEY, TELEGRAM_BOT_TOKEN, ...), read by
                systemd so that secrets stay out of the Nix store.
              '';
            };

            home = lib.mkOption {
              type = lib.types.path;
              default = "/var/lib/nanoclaw";
              description = "NANOCLAW_HOME: where store/, groups/ and skills/ live.";
            };

            user = lib.mkOption {
              type = lib.types.str;
              default = "nanoclaw";
              description = "User the daemon runs as; created when left at the default.";
            };
          };

          config = lib.mkIf cfg.enable {
            users.users = lib.mkIf (cfg.user == "nanoclaw") {
              nanoclaw = {
                isSystemUser = true;
                group = "nanoclaw";
                home = cfg.home;
              };
            };
            users.groups = lib.mkIf (cfg.user == "nanoclaw") { nanoclaw = { }; };

            systemd.tmpfiles.rules = [ "d ${cfg.home} 0750 ${cfg.user} - - -" ];

            systemd.services.nanoclaw = {
              description = "nanoclaw chat assistant";
              wantedBy = [ "multi-user.target" ];
              wants = [ "network-online.target" ];
              after = [ "network-online.target" ];
              environment.NANOCLAW_HOME = cfg.home;
              # nix-build for the groups' environments, talking to the system's Nix daemon;
              # their GC roots live under ${cfg.home}/store/envs.
              path = [ config.nix.package ];
              # Seed the group templates once; keep skills/ pointing at the current package.
              preStart = ''
                for f in groups/main/CLAUDE.md groups/global/CLAUDE.md; do
                  if [ ! -e "$f" ]; then
                    install -D -m 0644 ${share}/"$f" "$f"
                  fi
                done
                if [ -L skills ] || [ ! -e skills ]; then
                  ln -sfnT ${share}/skills skills
                fi
              '';
              serviceConfig = {
                ExecStart = "${lib.getExe cfg.package} run";
                User = cfg.user;
                WorkingDirectory = cfg.home;
                EnvironmentFile = lib.optional (cfg.environmentFile != null) cfg.environmentFile;
                Restart = "on-failure";
                RestartSec = 5;
                PrivateTmp = true;
                # No RestrictNamespaces or PrivateUsers: bwrap needs unprivileged user namespaces.
              };
            };
          };
        };
    };
}
