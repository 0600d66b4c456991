# SPDX-License-Identifier: AGPL-3.0-only
# NixOS module for the rfm agent.
#
#   imports = [ ./deploy/nixos/module.nix ];
#   services.rfm = {
#     enable = true;
#     package = pkgs.callPackage ./package.nix { };   # rfm is not in nixpkgs
#     settings.agent.interfaces = [ "eth0" "eth1" ];
#     settings.agent.prometheus.host = "::";
#   };
#
# Every key the agent knows is a typed option below; unset options (null)
# are left out of the generated file, so the agent's own defaults apply.
# Each section is also freeform TOML, so keys added by a newer agent can be
# set before this module knows them.
{ config, lib, pkgs, ... }:

let
  cfg = config.services.rfm;
  settingsFormat = pkgs.formats.toml { };

  # An optional key: null means "not written, agent default".
  opt = type: description: lib.mkOption {
    type = lib.types.nullOr type;
    default = null;
    inherit description;
  };

  # A TOML table with typed keys that still accepts unknown ones.
  section = description: options: lib.mkOption {
    inherit description;
    default = { };
    type = lib.types.submodule {
      freeformType = settingsFormat.type;
      inherit options;
    };
  };

  # Go's time.ParseDuration syntax, e.g. "30s", "1m30s", "500ms".
  duration = lib.types.strMatching "([0-9]+(\\.[0-9]+)?(ns|us|µs|ms|s|m|h))+";
  positive = lib.types.ints.positive;

  # pkgs.formats.toml cannot write null: drop unset keys (and tables left
  # empty by that) before generating the file.
  withoutNulls = value:
    if builtins.isAttrs value then
      lib.filterAttrs (_: v: v != null && v != { })
        (lib.mapAttrs (_: withoutNulls) value)
    else value;

  generatedConfig = settingsFormat.generate "rfm.toml" (withoutNulls cfg.settings);

  # The generated file checked at build time by the agent itself, so a bad
  # setting fails `nixos-rebuild` instead of the service start. --offline
  # checks syntax, keys and values but not this host (the build sandbox has
  # no real interfaces and may not see MMDB files). The copy is owned by
  # the build user: the agent refuses config files owned by anyone but
  # root or itself, and inside the sandbox the store's root appears as
  # "nobody".
  configFile = pkgs.runCommand "rfm.toml" { nativeBuildInputs = [ cfg.package ]; } ''
    cp ${generatedConfig} rfm.toml
    chmod 0600 rfm.toml
    rfm config check --offline -c rfm.toml > /dev/null
    install -m 0444 rfm.toml $out
  '';

  metricsPort =
    if cfg.settings.agent.prometheus.port != null
    then cfg.settings.agent.prometheus.port else 9669;

  capabilities = [ "CAP_BPF" "CAP_NET_ADMIN" "CAP_PERFMON" ];
in
{
  options.services.rfm = {
    enable = lib.mkEnableOption "rfm, the eBPF router flow monitor agent";

    package = lib.mkOption {
      type = lib.types.package;
      description = "The rfm package; its bin/rfm is run.";
      example = lib.literalExpression "pkgs.callPackage ./package.nix { }";
    };

    openFirewall = lib.mkOption {
      type = lib.types.bool;
      default = false;
      description = "Open the Prometheus metrics port (agent.prometheus.port) in the firewall.";
    };

    settings = lib.mkOption {
      description = "Contents of rfm.toml; see rfm's docs/configuration.md.";
      default = { };
      type = lib.types.submodule {
        freeformType = settingsFormat.type;
        options.agent = section "The [agent] table." {
          interfaces = lib.mkOption {
            type = lib.types.nonEmptyListOf lib.types.str;
            example = [ "eth0" "eth1" ];
            description = ''
              Interfaces to attach to: names, glob patterns such as "eth*" or
              "veth*", or [ "*" ] for every non-loopback interface. Interfaces
              that appear later and match are attached too.
            '';
          };

          bpf = section "Datapath settings." {
            sample_rate = opt positive "Sample 1 packet in N (default 100; 1 samples every packet).";
            ring_buf_size = opt positive "Ring buffer size in bytes, a power of two >= 4096 (default 262144).";
            directions = opt (lib.types.listOf (lib.types.enum [ "ingress" "egress" ])) ''Hooks that sample (default [ "ingress" "egress" ]); interface counters are kept at both.'';
            fields = opt (lib.types.listOf (lib.types.enum [ "tcp_flags" "dscp" "icmp" "ttl" "vlan" ])) "Optional header fields of flow records (default none).";
            fib_lookup = opt lib.types.bool "Look up the egress interface and next hop of sampled ingress packets in the kernel's FIB (default false).";
            max_interfaces = opt (lib.types.ints.between 1 262144) "Most interfaces attached at once, 1..262144 (default 262144); more are refused and counted.";
          };

          collector = section "Flow table settings." {
            max_flows = opt (lib.types.ints.between 0 4194304) "Maximum active flows, 0..4194304; 0 = the ceiling of 4194304 (default 65536).";
            eviction_timeout = opt duration ''Idle time after which a flow ends, >= 1s (default "30s").'';
            active_timeout = opt duration ''A flow that goes on is exported as a delta record this often, >= 1s (default "60s").'';
          };

          prometheus = section "Metrics endpoint." {
            host = opt lib.types.str ''Listen address (default "::1"; "::" or "0.0.0.0" for all).'';
            port = opt lib.types.port "Listen port, 1..65535 (default 9669).";
            # A string, not a path: a path would copy the file, which names TLS
            # keys and password hashes, into the world-readable Nix store.
            web_config = opt lib.types.str "Absolute path of a Prometheus exporter-toolkit web config file (TLS, basic auth) for /metrics and /healthz; readable by the service user.";
            max_label_sets = opt (lib.types.ints.between 1 1000000) ''Most label sets of the rfm_flow_* series; past it new ones go to the "overflow" series (default 10000).'';
            label_set_expiry = opt duration ''A label set without traffic for this long is dropped, >= 1m (default "1h").'';
          };

          control = section "Control plane (rfm status, rfm flows, ...)." {
            socket = lib.mkOption {
              type = lib.types.str;
              default = "/run/rfm/rfm.sock";
              description = ''Unix socket path; "" disables it. The default lives in the service's RuntimeDirectory.'';
            };
          };

          xdp = section "XDP fast path (firewall rules, live blocklist, local blackholing); off unless interfaces is set." {
            interfaces = opt (lib.types.listOf lib.types.str) ''Interfaces (names or glob patterns) to run the XDP program on; empty = off (default).'';
            mode = opt (lib.types.enum [ "auto" "native" "generic" ]) ''"native" (driver), "generic" (skb) or "auto" (native, else generic; default).'';
            blackhole_from_rib = opt lib.types.bool "Drop traffic to prefixes the BMP RIB carries with the BLACKHOLE community 65535:666 (default false).";
            state_file = opt lib.types.str ''Where the live blocklist persists (default "/var/lib/rfm/blocklist.json", in the service's StateDirectory).'';
            rules = opt (lib.types.listOf settingsFormat.type) ''Ordered [[agent.xdp.rules]] tables (name, action, src, dst, proto, src_ports, dst_ports, pps); first match wins.'';
          };

          ipfix = section "IPFIX export; off unless host or port is set, or collectors are listed." {
            host = opt lib.types.str ''Collector address or name (default "::1" when only port is set); the one-collector form.'';
            port = opt lib.types.port "Collector UDP port (default 4739 when only host is set).";
            bind = section "Fixed source of the exporter socket." {
              host = opt lib.types.str "Source address.";
              port = opt lib.types.port "Source port; 0 = ephemeral (still fixed for the process lifetime).";
            };
            collectors = opt (lib.types.listOf (lib.types.submodule {
              freeformType = settingsFormat.type;
              options = {
                host = opt lib.types.str ''Collector address or name (default "::1" when only port is set).'';
                port = opt lib.types.port "Collector UDP port (default 4739 when only host is set).";
                bind = section "Fixed source of this collector's exporter socket." {
                  host = opt lib.types.str "Source address.";
                  port = opt lib.types.port "Source port; 0 = ephemeral.";
                };
              };
            })) "Several collectors ([[agent.ipfix.collectors]], at most 8), each with its own socket, templates and queue; not together with host, port and bind.";
            bgp_communities = opt lib.types.bool "With a BMP-fed RIB, also export the destination route's communities (RFC 8549 basicLists; default false).";
            observation_domain_id = opt positive "Observation domain ID, > 0 (default 1).";
            template_refresh = opt duration ''How often templates are resent, >= 1s (default "60s").'';
            max_message_size = opt (lib.types.ints.between 512 65507) "UDP payload bytes per message (default 1400).";
          };

          enrich = section "Flow enrichment." {
            mmdb = section "MaxMind-format databases." {
              asn_db = opt lib.types.path "ASN MMDB file.";
              city_db = opt lib.types.path "City MMDB file.";
            };
            rib = section "BMP-fed routing table." {
              bmp = section "BMP listener; off unless host or port is set." {
                host = opt lib.types.str ''Listen address (default "::1" when only port is set).'';
                port = opt lib.types.port "Listen port (default 11019 when only host is set).";
                keep = opt duration ''How long routes of an ended session are kept (default "5m").'';
                allow = opt (lib.types.listOf lib.types.str) "Router addresses or prefixes allowed to connect; empty = all.";
                max_sessions = opt positive "Maximum concurrent BMP sessions, >= 1 (default 64).";
                max_message_size = opt (lib.types.ints.between 4096 16777215) "Largest BMP message in bytes (default 1048576).";
                label_vrfs = opt (lib.types.listOf lib.types.str) ''Route distinguishers ("65000:1", "192.0.2.1:5") whose VRF routes also label flows; empty = global routes only (default).'';
                max_routes_per_peer = opt lib.types.ints.unsigned "Routes one monitored peer may hold before all its routes are dropped until it comes up again; 0 = no limit (default).";
              };
            };
          };
        };
      };
    };
  };

  config = lib.mkIf cfg.enable {
    networking.firewall.allowedTCPPorts = lib.mkIf cfg.openFirewall [ metricsPort ];

    # /etc/rfm/rfm.toml as on other distributions, so `rfm config check`
    # and the agent find it without -c.
    environment.etc."rfm/rfm.toml".source = configFile;

    # The same least-privilege service as deploy/systemd/rfm.service.
    systemd.services.rfm = {
      description = "rfm router flow monitor (eBPF flow telemetry agent)";
      wantedBy = [ "multi-user.target" ];
      wants = [ "network-online.target" ];
      after = [ "network-online.target" ];
      # A new config is applied by a reload over the control socket (no
      # flows lost), a new package by a restart.
      reloadTriggers = [ configFile ];
      restartTriggers = [ cfg.package ];
      serviceConfig = {
        Type = "simple";
        ExecStart = "${lib.getExe' cfg.package "rfm"} agent -c /etc/rfm/rfm.toml";
        # With the control socket disabled, SIGHUP does the same.
        ExecReload =
          if cfg.settings.agent.control.socket == "" then "${pkgs.coreutils}/bin/kill -HUP $MAINPID"
          else "${lib.getExe' cfg.package "rfm"} reload --socket ${cfg.settings.agent.control.socket}";
        Restart = "on-failure";
        RestartSec = "5s";

        DynamicUser = true;
        User = "rfm";
        Group = "rfm";
        AmbientCapabilities = capabilities;
        CapabilityBoundingSet = capabilities;
        NoNewPrivileges = true;

        RuntimeDirectory = "rfm";
        RuntimeDirectoryMode = "0750";
        StateDirectory = "rfm";
        StateDirectoryMode = "0750";

        ProtectSystem = "strict";
        ProtectHome = true;
        PrivateTmp = true;
        PrivateDevices = true;
        ProtectKernelModules = true;
        ProtectKernelLogs = true;
        ProtectKernelTunables = true;
        ProtectControlGroups = true;
        ProtectClock = true;
        ProtectHostname = true;
        ProtectProc = "invisible";
        RestrictAddressFamilies = [ "AF_UNIX" "AF_INET" "AF_INET6" "AF_NETLINK" ];
        RestrictNamespaces = true;
        RestrictRealtime = true;
        RestrictSUIDSGID = true;
        LockPersonality = true;
        MemoryDenyWriteExecute = true;
        SystemCallArchitectures = "native";
        UMask = "0027";
      };
    };
  };
}
