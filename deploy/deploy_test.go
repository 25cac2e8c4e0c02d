// Package deploy holds the deployment files (Kubernetes manifests, a
// systemd unit and sample settings) and the test that checks them against
// the binary: every manifest parses, and its ports, probes and flags are
// the ones shoald has.
package deploy

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"shoal/internal/config"
	"shoal/internal/testproc"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testproc.Cleanup()
	os.Exit(code)
}

// shoaldFlags are the flags `shoald -h` lists.
func shoaldFlags(t *testing.T) map[string]bool {
	t.Helper()
	cmd := exec.Command(filepath.Join(testproc.Build(t), "shoald"), "-h")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("shoald -h: %v\n%s", err, out.String())
	}
	flags := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^  -([a-z0-9-]+)`).FindAllStringSubmatch(out.String(), -1) {
		flags[m[1]] = true
	}
	if len(flags) < 30 || !flags["discovery"] || !flags["listen"] {
		t.Fatalf("shoald -h lists %d flags:\n%s", len(flags), out.String())
	}
	return flags
}

// flagNames returns the names of the --flag and --flag=value arguments.
func flagNames(args []string) []string {
	var out []string
	for _, a := range args {
		if name, ok := strings.CutPrefix(a, "--"); ok {
			name, _, _ = strings.Cut(name, "=")
			out = append(out, name)
		}
	}
	return out
}

// Kubernetes objects, the fields the test reads.
type (
	meta struct {
		Name   string            `yaml:"name"`
		Labels map[string]string `yaml:"labels"`
	}
	object struct {
		APIVersion string            `yaml:"apiVersion"`
		Kind       string            `yaml:"kind"`
		Metadata   meta              `yaml:"metadata"`
		Spec       yaml.Node         `yaml:"spec"`
		Data       map[string]string `yaml:"data"`
	}
	selector struct {
		MatchLabels map[string]string `yaml:"matchLabels"`
	}
	probe struct {
		HTTPGet *struct {
			Path string `yaml:"path"`
			Port any    `yaml:"port"`
		} `yaml:"httpGet"`
		PeriodSeconds    int `yaml:"periodSeconds"`
		FailureThreshold int `yaml:"failureThreshold"`
	}
	container struct {
		Name    string   `yaml:"name"`
		Command []string `yaml:"command"`
		Args    []string `yaml:"args"`
		Env     []struct {
			Name      string `yaml:"name"`
			ValueFrom struct {
				FieldRef struct {
					FieldPath string `yaml:"fieldPath"`
				} `yaml:"fieldRef"`
			} `yaml:"valueFrom"`
		} `yaml:"env"`
		Ports []struct {
			Name          string `yaml:"name"`
			ContainerPort int    `yaml:"containerPort"`
		} `yaml:"ports"`
		StartupProbe   *probe `yaml:"startupProbe"`
		LivenessProbe  *probe `yaml:"livenessProbe"`
		ReadinessProbe *probe `yaml:"readinessProbe"`
		Lifecycle      struct {
			PreStop *struct {
				Exec *struct {
					Command []string `yaml:"command"`
				} `yaml:"exec"`
			} `yaml:"preStop"`
		} `yaml:"lifecycle"`
		VolumeMounts []struct {
			Name      string `yaml:"name"`
			MountPath string `yaml:"mountPath"`
		} `yaml:"volumeMounts"`
	}
	statefulSetSpec struct {
		ServiceName         string   `yaml:"serviceName"`
		Replicas            int      `yaml:"replicas"`
		PodManagementPolicy string   `yaml:"podManagementPolicy"`
		Selector            selector `yaml:"selector"`
		Template            struct {
			Metadata meta `yaml:"metadata"`
			Spec     struct {
				TerminationGracePeriodSeconds int         `yaml:"terminationGracePeriodSeconds"`
				Containers                    []container `yaml:"containers"`
				Volumes                       []volume    `yaml:"volumes"`
			} `yaml:"spec"`
		} `yaml:"template"`
		VolumeClaimTemplates []claim `yaml:"volumeClaimTemplates"`
	}
	volume struct {
		Name      string `yaml:"name"`
		ConfigMap *struct {
			Name string `yaml:"name"`
		} `yaml:"configMap"`
	}
	claim struct {
		Metadata meta `yaml:"metadata"`
	}
	serviceSpec struct {
		ClusterIP                string            `yaml:"clusterIP"`
		PublishNotReadyAddresses bool              `yaml:"publishNotReadyAddresses"`
		Selector                 map[string]string `yaml:"selector"`
		Ports                    []struct {
			Name       string `yaml:"name"`
			Port       int    `yaml:"port"`
			TargetPort any    `yaml:"targetPort"`
		} `yaml:"ports"`
	}
	pdbSpec struct {
		MaxUnavailable any      `yaml:"maxUnavailable"`
		Selector       selector `yaml:"selector"`
	}
)

// readManifests parses every YAML document of deploy/k8s, by kind.
func readManifests(t *testing.T) map[string]object {
	t.Helper()
	files, err := filepath.Glob("k8s/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests: %v", err)
	}
	out := map[string]object{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		dec.KnownFields(true)
		for {
			var o object
			err := dec.Decode(&o)
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if o.APIVersion == "" || o.Kind == "" || o.Metadata.Name == "" {
				t.Fatalf("%s: an object without apiVersion, kind or name: %+v", f, o)
			}
			if _, dup := out[o.Kind]; dup {
				t.Fatalf("%s: a second %s", f, o.Kind)
			}
			out[o.Kind] = o
		}
	}
	for _, kind := range []string{"StatefulSet", "Service", "PodDisruptionBudget", "ConfigMap"} {
		if _, ok := out[kind]; !ok {
			t.Fatalf("no %s in deploy/k8s", kind)
		}
	}
	return out
}

func decodeSpec(t *testing.T, o object, into any) {
	t.Helper()
	if err := o.Spec.Decode(into); err != nil {
		t.Fatalf("%s %s: %v", o.Kind, o.Metadata.Name, err)
	}
}

// loadConfig loads shoald's settings from toml and args (flags win), with
// the real loader: unknown keys and bad values are errors.
func loadConfig(t *testing.T, toml string, args ...string) config.Config {
	t.Helper()
	path := filepath.Join(t.TempDir(), "shoald.toml")
	if err := os.WriteFile(path, []byte(toml), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(append([]string{"--config", path}, args...), io.Discard)
	if err != nil {
		t.Fatalf("the settings do not load: %v\n%s\nargs %q", err, toml, args)
	}
	return cfg
}

func port(t *testing.T, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestKubernetes checks the manifests against each other and the binary:
// the StatefulSet's flags are shoald's and load with the ConfigMap's
// settings; its ports are the listen and HTTP ports of those settings, the
// headless Service's and the advertised and discovered ones; its probes
// are /readyz and /healthz on the HTTP port, which shoald answers.
func TestKubernetes(t *testing.T) {
	flags := shoaldFlags(t)
	objs := readManifests(t)

	var sts statefulSetSpec
	decodeSpec(t, objs["StatefulSet"], &sts)
	var svc serviceSpec
	decodeSpec(t, objs["Service"], &svc)
	var pdb pdbSpec
	decodeSpec(t, objs["PodDisruptionBudget"], &pdb)
	cm := objs["ConfigMap"]

	if sts.PodManagementPolicy != "Parallel" {
		t.Errorf("podManagementPolicy %q, want Parallel", sts.PodManagementPolicy)
	}
	if sts.ServiceName != objs["Service"].Metadata.Name {
		t.Errorf("serviceName %q, the Service is %q", sts.ServiceName, objs["Service"].Metadata.Name)
	}
	if svc.ClusterIP != "None" || !svc.PublishNotReadyAddresses {
		t.Errorf("the Service is not headless with publishNotReadyAddresses: %+v", svc)
	}
	if fmtAny(pdb.MaxUnavailable) != "1" {
		t.Errorf("PodDisruptionBudget maxUnavailable %v, want 1", pdb.MaxUnavailable)
	}
	labels := sts.Template.Metadata.Labels
	for what, sel := range map[string]map[string]string{"StatefulSet selector": sts.Selector.MatchLabels, "Service selector": svc.Selector, "PodDisruptionBudget selector": pdb.Selector.MatchLabels} {
		if len(sel) == 0 {
			t.Errorf("%s is empty", what)
		}
		for k, v := range sel {
			if labels[k] != v {
				t.Errorf("%s %s=%s does not match the pods' labels %v", what, k, v, labels)
			}
		}
	}

	if len(sts.Template.Spec.Containers) != 1 {
		t.Fatalf("%d containers, want shoald alone", len(sts.Template.Spec.Containers))
	}
	c := sts.Template.Spec.Containers[0]
	if len(c.Command) != 1 || filepath.Base(c.Command[0]) != "shoald" {
		t.Errorf("command %q, want shoald", c.Command)
	}
	for _, f := range flagNames(c.Args) {
		if !flags[f] {
			t.Errorf("the StatefulSet passes --%s, which shoald -h does not list", f)
		}
	}
	// The pod's environment, as the downward API would set it.
	env := map[string]string{"metadata.name": "shoal-0", "status.podIP": "10.1.2.3", "metadata.namespace": "prod"}
	vars := map[string]string{}
	for _, e := range c.Env {
		v, ok := env[e.ValueFrom.FieldRef.FieldPath]
		if !ok {
			t.Errorf("env %s from %q: not a field this test knows", e.Name, e.ValueFrom.FieldRef.FieldPath)
		}
		vars[e.Name] = v
	}
	var args []string
	for _, a := range c.Args {
		args = append(args, regexp.MustCompile(`\$\((\w+)\)`).ReplaceAllStringFunc(a, func(m string) string {
			v, ok := vars[m[2:len(m)-1]]
			if !ok {
				t.Errorf("arg %q uses %s, which the container's env does not set", a, m)
			}
			return v
		}))
	}
	var configPath string
	for _, a := range args {
		if p, ok := strings.CutPrefix(a, "--config="); ok {
			configPath = p
		}
	}
	toml, ok := cm.Data[filepath.Base(configPath)]
	if configPath == "" || !ok {
		t.Fatalf("--config=%q is not a key of the ConfigMap %v", configPath, mapsKeys(cm.Data))
	}
	var mountedConfig, mountedData bool
	cfg := loadConfig(t, toml, slices.DeleteFunc(slices.Clone(args), func(a string) bool { return strings.HasPrefix(a, "--config=") })...)
	for _, m := range c.VolumeMounts {
		switch {
		case m.MountPath == filepath.Dir(configPath):
			mountedConfig = slices.ContainsFunc(sts.Template.Spec.Volumes, func(v volume) bool {
				return v.Name == m.Name && v.ConfigMap != nil && v.ConfigMap.Name == cm.Metadata.Name
			})
		case m.MountPath == cfg.Data:
			mountedData = slices.ContainsFunc(sts.VolumeClaimTemplates, func(v claim) bool { return v.Metadata.Name == m.Name })
		}
	}
	if !mountedConfig || !mountedData {
		t.Errorf("the ConfigMap mounted at %s: %v; a volume claim at the data directory %s: %v", filepath.Dir(configPath), mountedConfig, cfg.Data, mountedData)
	}
	if cfg.NodeID != "shoal-0" || cfg.Advertise != "10.1.2.3:"+strconv.Itoa(port(t, cfg.Listen)) {
		t.Errorf("node id %q, advertise %q (listen %s)", cfg.NodeID, cfg.Advertise, cfg.Listen)
	}
	if cfg.BootstrapExpect != sts.Replicas {
		t.Errorf("bootstrap_expect %d, replicas %d", cfg.BootstrapExpect, sts.Replicas)
	}
	wantDisc := "dns:" + objs["Service"].Metadata.Name + ".prod.svc.cluster.local:" + strconv.Itoa(port(t, cfg.Listen))
	if cfg.Discovery != wantDisc {
		t.Errorf("discovery %q, want %q: the headless Service's name and the data port", cfg.Discovery, wantDisc)
	}

	ports := map[string]int{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	if ports["data"] != port(t, cfg.Listen) || ports["http"] != port(t, cfg.HTTP) || len(ports) != 2 {
		t.Errorf("container ports %v; the settings listen on %s and %s", ports, cfg.Listen, cfg.HTTP)
	}
	for _, p := range svc.Ports {
		if ports[p.Name] != p.Port || (fmtAny(p.TargetPort) != p.Name && fmtAny(p.TargetPort) != strconv.Itoa(p.Port)) {
			t.Errorf("Service port %s %d -> %v; the container's is %d", p.Name, p.Port, p.TargetPort, ports[p.Name])
		}
	}
	paths := map[string]string{}
	for name, pr := range map[string]*probe{"startup": c.StartupProbe, "liveness": c.LivenessProbe, "readiness": c.ReadinessProbe} {
		if pr == nil || pr.HTTPGet == nil {
			t.Errorf("no %s probe over HTTP", name)
			continue
		}
		if p := fmtAny(pr.HTTPGet.Port); p != "http" && p != strconv.Itoa(ports["http"]) {
			t.Errorf("the %s probe asks port %s, not the HTTP port", name, p)
		}
		paths[name] = pr.HTTPGet.Path
	}
	if paths["readiness"] != "/readyz" || paths["liveness"] != "/healthz" {
		t.Errorf("probes %v, want readiness /readyz and liveness /healthz", paths)
	}
	if pre := c.Lifecycle.PreStop; pre == nil || pre.Exec == nil || !strings.Contains(strings.Join(pre.Exec.Command, " "), "kill -TERM 1") {
		t.Errorf("the preStop hook does not stop shoald (SIGTERM): %+v", pre)
	}
	if g := sts.Template.Spec.TerminationGracePeriodSeconds; g < 30 {
		t.Errorf("terminationGracePeriodSeconds %d: too short for the final dump", g)
	}

	// The probes' paths are the binary's: shoald answers them (not 404).
	n := testproc.Start(t)
	hc := &http.Client{Timeout: 5 * time.Second}
	for name, path := range paths {
		deadline := time.Now().Add(20 * time.Second)
		for {
			resp, err := hc.Get("http://" + n.HTTP + path)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
			if resp.StatusCode == http.StatusNotFound || time.Now().After(deadline) {
				t.Fatalf("the %s probe's %s: %s", name, path, resp.Status)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

func fmtAny(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case int:
		return strconv.Itoa(x)
	}
	return ""
}

func mapsKeys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// unit parses a systemd unit file into section → key → values.
func unit(t *testing.T, path string) map[string]map[string][]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string][]string{}
	var section string
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = line[1 : len(line)-1]
			out[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s:%d: %q is not KEY=VALUE in a section", path, i+1, line)
			}
			out[section][k] = append(out[section][k], v)
		}
	}
	return out
}

// TestSystemd checks the unit: a simple service with a restart policy, a
// file limit, a data directory, and an ExecStart of shoald's flags with
// the sample settings, which load.
func TestSystemd(t *testing.T) {
	flags := shoaldFlags(t)
	u := unit(t, "systemd/shoald.service")
	svc := u["Service"]
	one := func(k string) string {
		t.Helper()
		if len(svc[k]) != 1 {
			t.Fatalf("[Service] %s: %q, want one value", k, svc[k])
		}
		return svc[k][0]
	}
	if typ := one("Type"); typ != "simple" && typ != "notify" {
		t.Errorf("Type=%s", typ)
	}
	if r := one("Restart"); r != "on-failure" && r != "always" {
		t.Errorf("Restart=%s", r)
	}
	if d, err := time.ParseDuration(one("RestartSec")); err != nil || d < time.Second {
		t.Errorf("RestartSec=%s: at least a second between restarts", one("RestartSec"))
	}
	if one("RestartPreventExitStatus") != "2" {
		t.Errorf("RestartPreventExitStatus=%s: shoald exits 2 on bad settings", one("RestartPreventExitStatus"))
	}
	if n, err := strconv.Atoi(one("LimitNOFILE")); err != nil || n < config.Default().MaxConnections+1000 {
		t.Errorf("LimitNOFILE=%s: want room for %d client connections and more", one("LimitNOFILE"), config.Default().MaxConnections)
	}
	if one("KillSignal") != "SIGTERM" {
		t.Errorf("KillSignal=%s: shoald stops cleanly on SIGTERM", one("KillSignal"))
	}
	if u["Install"]["WantedBy"] == nil || u["Unit"]["After"] == nil {
		t.Errorf("no WantedBy or After: %v", u)
	}
	exec := strings.Fields(one("ExecStart"))
	if filepath.Base(exec[0]) != "shoald" {
		t.Fatalf("ExecStart=%s", one("ExecStart"))
	}
	var configPath string
	for i, a := range exec[1:] {
		for _, f := range flagNames([]string{a}) {
			if !flags[f] {
				t.Errorf("ExecStart passes --%s, which shoald -h does not list", f)
			}
		}
		if a == "--config" && i+2 < len(exec) {
			configPath = exec[i+2]
		}
	}
	if configPath != "/etc/shoal/shoald.toml" {
		t.Fatalf("ExecStart gives --config %q, want the sample's place /etc/shoal/shoald.toml", configPath)
	}
	sample, err := os.ReadFile("systemd/shoald.toml")
	if err != nil {
		t.Fatal(err)
	}
	cfg := loadConfig(t, string(sample))
	state := "/var/lib/" + one("StateDirectory")
	if cfg.Data != state || one("WorkingDirectory") != state || !slices.Contains(svc["ReadWritePaths"], state) {
		t.Errorf("data %q; StateDirectory %s, WorkingDirectory %s, ReadWritePaths %v", cfg.Data, state, one("WorkingDirectory"), svc["ReadWritePaths"])
	}
	if cfg.Discovery == "" || cfg.BootstrapExpect < 1 {
		t.Errorf("the sample settings find no nodes: discovery %q, bootstrap_expect %d", cfg.Discovery, cfg.BootstrapExpect)
	}
}
