// SPDX-License-Identifier: AGPL-3.0-only

package deploy

import (
	"bytes"
	"debug/elf"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// The part of the Kubernetes object model these checks read. Unknown
// fields are rejected (KnownFields), so a misspelt key such as
// "readOnlyRootFileSystem" fails here instead of being ignored by the
// API server's lenient decoding.
type k8sObject struct {
	APIVersion string            `yaml:"apiVersion"`
	Kind       string            `yaml:"kind"`
	Metadata   k8sMeta           `yaml:"metadata"`
	Spec       *k8sWorkloadSpec  `yaml:"spec"`
	Data       map[string]string `yaml:"data"`
	// Kustomization
	Resources []string `yaml:"resources"`
	Images    []any    `yaml:"images"`
}

type k8sMeta struct {
	Name        string            `yaml:"name"`
	Namespace   string            `yaml:"namespace"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

type k8sWorkloadSpec struct {
	Replicas       *int           `yaml:"replicas"`
	Selector       k8sSelector    `yaml:"selector"`
	UpdateStrategy map[string]any `yaml:"updateStrategy"`
	Template       k8sPodTemplate `yaml:"template"`
}

type k8sSelector struct {
	MatchLabels map[string]string `yaml:"matchLabels"`
}

type k8sPodTemplate struct {
	Metadata k8sMeta    `yaml:"metadata"`
	Spec     k8sPodSpec `yaml:"spec"`
}

type k8sPodSpec struct {
	HostNetwork                   bool           `yaml:"hostNetwork"`
	DNSPolicy                     string         `yaml:"dnsPolicy"`
	PriorityClassName             string         `yaml:"priorityClassName"`
	AutomountServiceAccountToken  *bool          `yaml:"automountServiceAccountToken"`
	Tolerations                   []any          `yaml:"tolerations"`
	TerminationGracePeriodSeconds *int           `yaml:"terminationGracePeriodSeconds"`
	InitContainers                []k8sContainer `yaml:"initContainers"`
	Containers                    []k8sContainer `yaml:"containers"`
	Volumes                       []k8sVolume    `yaml:"volumes"`
	SecurityContext               map[string]any `yaml:"securityContext"`
}

type k8sContainer struct {
	Name            string           `yaml:"name"`
	Image           string           `yaml:"image"`
	ImagePullPolicy string           `yaml:"imagePullPolicy"`
	RestartPolicy   string           `yaml:"restartPolicy"`
	Command         []string         `yaml:"command"`
	Args            []string         `yaml:"args"`
	Ports           []k8sPort        `yaml:"ports"`
	LivenessProbe   *k8sProbe        `yaml:"livenessProbe"`
	ReadinessProbe  *k8sProbe        `yaml:"readinessProbe"`
	Resources       map[string]any   `yaml:"resources"`
	SecurityContext *k8sSecurity     `yaml:"securityContext"`
	VolumeMounts    []k8sVolumeMount `yaml:"volumeMounts"`
	Env             []map[string]any `yaml:"env"`
}

type k8sPort struct {
	Name          string `yaml:"name"`
	ContainerPort int    `yaml:"containerPort"`
	Protocol      string `yaml:"protocol"`
}

type k8sProbe struct {
	HTTPGet *struct {
		Path string `yaml:"path"`
		Port any    `yaml:"port"`
	} `yaml:"httpGet"`
	InitialDelaySeconds int `yaml:"initialDelaySeconds"`
	PeriodSeconds       int `yaml:"periodSeconds"`
	FailureThreshold    int `yaml:"failureThreshold"`
}

type k8sSecurity struct {
	Privileged   *bool `yaml:"privileged"`
	Capabilities *struct {
		Add  []string `yaml:"add"`
		Drop []string `yaml:"drop"`
	} `yaml:"capabilities"`
	RunAsUser                *int           `yaml:"runAsUser"`
	RunAsNonRoot             *bool          `yaml:"runAsNonRoot"`
	AllowPrivilegeEscalation *bool          `yaml:"allowPrivilegeEscalation"`
	ReadOnlyRootFilesystem   *bool          `yaml:"readOnlyRootFilesystem"`
	SeccompProfile           map[string]any `yaml:"seccompProfile"`
}

type k8sVolumeMount struct {
	Name      string `yaml:"name"`
	MountPath string `yaml:"mountPath"`
	ReadOnly  bool   `yaml:"readOnly"`
}

type k8sVolume struct {
	Name      string                 `yaml:"name"`
	ConfigMap *struct{ Name string } `yaml:"configMap"`
	EmptyDir  map[string]any         `yaml:"emptyDir"`
	HostPath  *struct {
		Path string `yaml:"path"`
		Type string `yaml:"type"`
	} `yaml:"hostPath"`
}

// loadManifests decodes every document of every .yaml file under
// deploy/kubernetes, keyed by "file#index".
func loadManifests(t *testing.T) map[string]k8sObject {
	t.Helper()
	root := deployPath(t, "kubernetes")
	objects := map[string]k8sObject{}
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".yaml") {
			return err
		}
		raw, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		dec := yaml.NewDecoder(bytes.NewReader(raw))
		dec.KnownFields(true)
		for i := 0; ; i++ {
			var o k8sObject
			err := dec.Decode(&o)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Errorf("deploy/kubernetes/%s document %d: %v", rel, i, err)
				break
			}
			objects[rel+"#"+strconv.Itoa(i)] = o
		}
		return nil
	})
	if err != nil {
		t.Fatalf("read deploy/kubernetes: %v", err)
	}
	if len(objects) == 0 {
		t.Fatal("deploy/kubernetes: no manifests")
	}
	return objects
}

// k8sCapabilities maps the unit's "CAP_BPF" to Kubernetes' "BPF".
func k8sCapabilities(unitCaps []string) []string {
	out := make([]string, len(unitCaps))
	for i, c := range unitCaps {
		out[i] = strings.TrimPrefix(c, "CAP_")
	}
	sort.Strings(out)
	return out
}

// TestKubernetesManifests parses every manifest strictly and checks what
// the deployment depends on: identity fields on every object; for each
// workload a host network (DaemonSet) or shared pod network (sidecar),
// an rfm container that is not privileged, drops ALL capabilities and
// adds exactly the systemd unit's, cannot escalate, has a read-only root
// filesystem, runs `rfm agent -c /etc/rfm/rfm.toml`, mounts its ConfigMap
// there and a writable /run/rfm for the control socket, exposes 9669 and
// probes GET /healthz on it; no /sys/fs/bpf host mount; and every
// kustomization resource exists.
func TestKubernetesManifests(t *testing.T) {
	objects := loadManifests(t)
	wantCaps := k8sCapabilities(unitCapabilities(t))
	configMaps := map[string]k8sObject{}
	for _, o := range objects {
		if o.Kind == "ConfigMap" {
			configMaps[o.Metadata.Namespace+"/"+o.Metadata.Name] = o
		}
	}
	kinds := map[string]int{}
	for where, o := range objects {
		kinds[o.Kind]++
		if o.APIVersion == "" || o.Kind == "" {
			t.Errorf("%s: apiVersion %q and kind %q must be set", where, o.APIVersion, o.Kind)
		}
		if o.Kind == "Kustomization" {
			for _, r := range o.Resources {
				if _, err := os.Stat(filepath.Join(deployPath(t, "kubernetes"), filepath.Dir(strings.Split(where, "#")[0]), r)); err != nil {
					t.Errorf("%s: resource %s: %v", where, r, err)
				}
			}
			continue
		}
		if o.Metadata.Name == "" {
			t.Errorf("%s: metadata.name is empty", where)
		}
		if o.Kind != "DaemonSet" && o.Kind != "Deployment" {
			continue
		}
		checkWorkload(t, where, o, wantCaps, configMaps)
	}
	for _, kind := range []string{"DaemonSet", "Deployment", "ConfigMap", "Kustomization", "Namespace"} {
		if kinds[kind] == 0 {
			t.Errorf("deploy/kubernetes: no %s", kind)
		}
	}
}

func checkWorkload(t *testing.T, where string, o k8sObject, wantCaps []string, configMaps map[string]k8sObject) {
	t.Helper()
	if o.Spec == nil {
		t.Errorf("%s: no spec", where)
		return
	}
	pod := o.Spec.Template.Spec
	for k, v := range o.Spec.Selector.MatchLabels {
		if o.Spec.Template.Metadata.Labels[k] != v {
			t.Errorf("%s: selector %s=%s does not match the pod template's labels", where, k, v)
		}
	}
	if len(o.Spec.Selector.MatchLabels) == 0 {
		t.Errorf("%s: empty selector", where)
	}
	if o.Kind == "DaemonSet" && !pod.HostNetwork {
		t.Errorf("%s: a DaemonSet must use hostNetwork to see the node's interfaces", where)
	}
	if o.Kind == "DaemonSet" && pod.DNSPolicy != "ClusterFirstWithHostNet" {
		t.Errorf("%s: dnsPolicy %q, want ClusterFirstWithHostNet with hostNetwork", where, pod.DNSPolicy)
	}
	var agent *k8sContainer
	for i, c := range append(append([]k8sContainer{}, pod.InitContainers...), pod.Containers...) {
		if c.Name == "rfm" {
			agent = &append(append([]k8sContainer{}, pod.InitContainers...), pod.Containers...)[i]
		}
	}
	if agent == nil {
		t.Errorf("%s: no container named rfm", where)
		return
	}
	argv := strings.Join(append(append([]string{}, agent.Command...), agent.Args...), " ")
	if argv != "" && argv != "/usr/local/bin/rfm agent -c /etc/rfm/rfm.toml" {
		t.Errorf("%s: rfm runs %q, want the image's /usr/local/bin/rfm agent -c /etc/rfm/rfm.toml", where, argv)
	}
	sc := agent.SecurityContext
	switch {
	case sc == nil:
		t.Errorf("%s: rfm container has no securityContext", where)
		return
	case sc.Privileged == nil || *sc.Privileged:
		t.Errorf("%s: rfm container must set privileged: false", where)
	}
	if sc.Capabilities == nil {
		t.Errorf("%s: rfm container sets no capabilities", where)
	} else {
		add := append([]string{}, sc.Capabilities.Add...)
		sort.Strings(add)
		if strings.Join(add, " ") != strings.Join(wantCaps, " ") {
			t.Errorf("%s: capabilities.add %v, want the systemd unit's %v", where, sc.Capabilities.Add, wantCaps)
		}
		if strings.Join(sc.Capabilities.Drop, " ") != "ALL" {
			t.Errorf("%s: capabilities.drop %v, want [ALL]", where, sc.Capabilities.Drop)
		}
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Errorf("%s: allowPrivilegeEscalation must be false", where)
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Errorf("%s: readOnlyRootFilesystem must be true", where)
	}
	hasMetricsPort := false
	for _, p := range agent.Ports {
		hasMetricsPort = hasMetricsPort || p.ContainerPort == 9669
	}
	if !hasMetricsPort {
		t.Errorf("%s: rfm container does not declare port 9669", where)
	}
	for name, probe := range map[string]*k8sProbe{"livenessProbe": agent.LivenessProbe, "readinessProbe": agent.ReadinessProbe} {
		if probe == nil || probe.HTTPGet == nil || probe.HTTPGet.Path != "/healthz" ||
			(probe.HTTPGet.Port != 9669 && probe.HTTPGet.Port != "metrics") {
			t.Errorf("%s: %s must be httpGet /healthz on 9669", where, name)
		}
	}
	mounts := map[string]k8sVolumeMount{}
	for _, m := range agent.VolumeMounts {
		mounts[m.MountPath] = m
	}
	volumes := map[string]k8sVolume{}
	for _, v := range pod.Volumes {
		volumes[v.Name] = v
		if v.HostPath != nil {
			t.Errorf("%s: volume %s mounts host path %s; the agent needs none", where, v.Name, v.HostPath.Path)
		}
	}
	cfgMount, ok := mounts["/etc/rfm"]
	if !ok || !cfgMount.ReadOnly {
		t.Errorf("%s: rfm container needs a read-only mount at /etc/rfm", where)
	} else if v := volumes[cfgMount.Name]; v.ConfigMap == nil {
		t.Errorf("%s: /etc/rfm is not a ConfigMap volume", where)
	} else if cm, ok := configMaps[o.Metadata.Namespace+"/"+v.ConfigMap.Name]; !ok {
		t.Errorf("%s: ConfigMap %s/%s is not in deploy/kubernetes", where, o.Metadata.Namespace, v.ConfigMap.Name)
	} else if cm.Data["rfm.toml"] == "" {
		t.Errorf("%s: ConfigMap %s has no rfm.toml", where, v.ConfigMap.Name)
	}
	if m, ok := mounts["/run/rfm"]; !ok || m.ReadOnly || volumes[m.Name].EmptyDir == nil {
		t.Errorf("%s: rfm container needs a writable emptyDir at /run/rfm for the control socket", where)
	}
}

// TestKubernetesConfigMaps feeds every ConfigMap's rfm.toml to the
// agent's own `rfm config check --offline` (the file, not this host's
// interfaces), and requires the metrics endpoint to be reachable from
// outside the pod and an interface list of "*" or a glob pattern.
func TestKubernetesConfigMaps(t *testing.T) {
	objects := loadManifests(t)
	rfm := agentBinary(t)
	help, _ := exec.Command(rfm, "config", "check", "--help").CombinedOutput()
	if !strings.Contains(string(help), "--offline") {
		t.Skip("rfm config check has no --offline flag yet")
	}
	checked := 0
	for where, o := range objects {
		if o.Kind != "ConfigMap" {
			continue
		}
		toml, ok := o.Data["rfm.toml"]
		if !ok {
			t.Errorf("%s: ConfigMap without rfm.toml", where)
			continue
		}
		path := filepath.Join(t.TempDir(), "rfm.toml")
		writeFile(t, path, toml)
		out, err := exec.Command(rfm, "config", "check", "--offline", "-c", path).CombinedOutput()
		if err != nil {
			t.Errorf("%s: rfm config check --offline: %v\n%s", where, err, out)
			continue
		}
		checked++
		// The effective config printed by the check, with defaults.
		effective := string(out)
		if !regexp.MustCompile(`(?m)^\s*host\s*=\s*"::"`).MatchString(sectionOf(effective, "agent.prometheus")) {
			t.Errorf(`%s: agent.prometheus.host must be "::" so Prometheus and the kubelet reach it; effective config:%s`, where, effective)
		}
		if !regexp.MustCompile(`(?m)^\s*interfaces\s*=\s*\[[^\]]*[*?\[]`).MatchString(sectionOf(effective, "agent")) &&
			o.Metadata.Name != "rfm-sidecar-config" {
			t.Errorf(`%s: a DaemonSet's agent.interfaces must be ["*"] or glob patterns; effective config:%s`, where, effective)
		}
	}
	if checked == 0 {
		t.Fatal("deploy/kubernetes: no ConfigMap checked")
	}
}

// sectionOf returns the lines of TOML table name, up to the next table.
func sectionOf(toml, name string) string {
	var b strings.Builder
	in := false
	for _, line := range strings.Split(toml, "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "[") {
			in = trimmed == "["+name+"]"
			continue
		}
		if in {
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}

// TestDockerfile checks the Dockerfile without a Docker engine (none runs
// here): a builder stage that builds the static binary the way the issue
// asks, a distroless or scratch final stage that copies only the binary
// and the licence texts, and the entrypoint the Kubernetes manifests rely on. It also builds the
// binary with the same command and requires it to be static.
func TestDockerfile(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(deployDir, "..", "Dockerfile"))
	if err != nil {
		t.Fatalf("read Dockerfile: %v", err)
	}
	var froms []string
	var instr []string
	for _, line := range strings.Split(string(raw), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		instr = append(instr, line)
		if strings.HasPrefix(line, "FROM ") {
			froms = append(froms, line)
		}
	}
	if len(froms) < 2 || !strings.HasPrefix(froms[0], "FROM golang:") || !strings.HasSuffix(froms[0], " AS build") {
		t.Errorf("Dockerfile: want a golang builder stage named build and a final stage, got %v", froms)
	}
	final := froms[len(froms)-1]
	if !strings.HasPrefix(final, "FROM gcr.io/distroless/static") && final != "FROM scratch" {
		t.Errorf("Dockerfile: final stage %q is not distroless/static or scratch", final)
	}
	text := strings.Join(instr, "\n")
	for _, want := range []string{
		`RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /out/rfm ./cmd/rfm`,
		"COPY --from=build /out/rfm /usr/local/bin/rfm",
		`ENTRYPOINT ["/usr/local/bin/rfm", "agent", "-c", "/etc/rfm/rfm.toml"]`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("Dockerfile: missing %s", want)
		}
	}
	finalStage := text[strings.LastIndex(text, "FROM "):]
	for _, want := range []string{
		"COPY LICENSE /usr/share/doc/rfm/LICENSE",
		"COPY LICENSES/ /usr/share/doc/rfm/LICENSES/",
	} {
		if !strings.Contains(finalStage, "\n"+want+"\n") {
			t.Errorf("Dockerfile: the final stage does not carry the licence texts: missing %s", want)
		}
	}
	if strings.Count(finalStage, "\nCOPY ") != 3 || strings.Contains(finalStage, "\nRUN ") {
		t.Errorf("Dockerfile: the final stage should only copy the binary and the licence texts:\n%s", finalStage)
	}
	ignore, err := os.ReadFile(filepath.Join(deployDir, "..", ".dockerignore"))
	if err != nil {
		t.Fatalf("read .dockerignore: %v", err)
	}
	for _, keep := range []string{"cmd", "internal", "go.mod", "go.sum"} {
		if regexp.MustCompile(`(?m)^/?` + keep + `/?$`).Match(ignore) {
			t.Errorf(".dockerignore excludes %s, which the build needs", keep)
		}
	}

	// The builder's command, here: the result must be a static binary.
	bin := filepath.Join(t.TempDir(), "rfm")
	build := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", bin, "./cmd/rfm")
	build.Dir = filepath.Join(deployDir, "..")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build as in the Dockerfile: %v\n%s", err, out)
	}
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatalf("read the built binary: %v", err)
	}
	defer f.Close()
	// A dynamically linked executable names its loader in PT_INTERP.
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("the binary built as in the Dockerfile is dynamically linked (has PT_INTERP)")
		}
	}
}
