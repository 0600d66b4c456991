# Evaluates deploy/nixos/module.nix without nixpkgs (none is available
# offline here). The lib and pkgs below stand in for the few functions the
# module calls, with nixpkgs' names and argument shapes; they record what
# the module declares and do not type-check values. Printed as JSON by
# test/deploy:
#   topLevel: the options of services.rfm
#   options:  every settings option as a dotted path with its type
#   freeform: whether settings accepts keys the module does not know
#   service:  systemd.services.rfm of a configuration with `settings`
#   etc, firewall: environment.etc names and opened TCP ports
#   build:    the script that builds the checked rfm.toml (runCommand),
#             written to a file so the test can run it for real
{ module, settings ? { } }:
let
  t = name: extra: { _type = "type"; inherit name; } // extra;
  types = {
    bool = t "bool" { };
    str = t "str" { };
    path = t "path" { };
    package = t "package" { };
    port = t "port" { };
    strMatching = re: t "strMatching" { inherit re; };
    ints = {
      positive = t "positive" { };
      unsigned = t "unsigned" { };
      between = lo: hi: t "between" { inherit lo hi; };
    };
    nullOr = inner: t "nullOr" { inherit inner; };
    listOf = inner: t "listOf" { inherit inner; };
    nonEmptyListOf = inner: t "nonEmptyListOf" { inherit inner; };
    submodule = m: t "submodule" { options = m.options or { }; freeform = m ? freeformType; };
  };
  lib = {
    inherit types;
    mkOption = o: { _type = "option"; } // o;
    mkEnableOption = what: { _type = "option"; type = types.bool; default = false; };
    literalExpression = text: { _type = "literalExpression"; inherit text; };
    mkIf = condition: content: { _type = "if"; inherit condition content; };
    getExe' = pkg: exe: "${pkg}/bin/${exe}";
    filterAttrs = pred: set: builtins.listToAttrs (builtins.filter (kv: pred kv.name kv.value)
      (map (name: { inherit name; value = set.${name}; }) (builtins.attrNames set)));
    mapAttrs = builtins.mapAttrs;
  };

  # A TOML writer for what settings hold: tables, strings, integers,
  # booleans and lists of those. A JSON string is a valid TOML string.
  scalar = v:
    if builtins.isList v then "[" + builtins.concatStringsSep ", " (map scalar v) + "]"
    else if builtins.isBool v then (if v then "true" else "false")
    else if builtins.isInt v then toString v
    else builtins.toJSON v;
  toTOML = prefix: set:
    let
      names = builtins.attrNames set;
      tables = builtins.filter (n: builtins.isAttrs set.${n}) names;
      values = builtins.filter (n: !builtins.isAttrs set.${n}) names;
      header = if prefix == "" || values == [ ] then "" else "[${prefix}]\n";
    in
    header + builtins.concatStringsSep "" (map (n: "${n} = ${scalar set.${n}}\n") values)
    + builtins.concatStringsSep "" (map (n: toTOML (if prefix == "" then n else "${prefix}.${n}") set.${n}) tables);

  store = name: "/nix/store/00000000000000000000000000000000-${name}";
  pkgs = {
    formats.toml = { }: {
      type = t "toml" { };
      generate = name: value: builtins.toFile name (toTOML "" value);
    };
    # The build script itself, to be run by the test.
    runCommand = name: env: script: builtins.toFile "${name}.sh" script;
    coreutils = store "coreutils";
    callPackage = f: args: store "rfm";
  };

  # What the module system would hand the module: option defaults
  # overlaid with the given settings.
  defaults = opts: builtins.mapAttrs (_: o:
    if o.type.name == "submodule" then defaults o.type.options else o.default or null) opts;
  merge = a: b: a // builtins.mapAttrs (n: v:
    if builtins.isAttrs v && builtins.isAttrs (a.${n} or null) then merge a.${n} v else v) b;
  cfg = {
    enable = true;
    package = store "rfm";
    openFirewall = true;
    settings = merge (defaults m.options.services.rfm.settings.type.options) settings;
  };
  m = import module { config.services.rfm = cfg; inherit lib pkgs; };

  optionPaths = prefix: opts: builtins.concatLists (map (name:
    let o = opts.${name}; path = if prefix == "" then name else "${prefix}.${name}"; in
    if o.type.name == "submodule" then optionPaths path o.type.options
    else [{ inherit path; type = o.type.name; }]) (builtins.attrNames opts));
in
{
  topLevel = builtins.attrNames m.options.services.rfm;
  options = optionPaths "" m.options.services.rfm.settings.type.options;
  freeform = m.options.services.rfm.settings.type.freeform;
  service = m.config.content.systemd.services.rfm;
  etc = builtins.mapAttrs (_: e: e.source) m.config.content.environment.etc;
  firewall = m.config.content.networking.firewall.allowedTCPPorts.content;
}
