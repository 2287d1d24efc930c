package main

// Per-file constants, encoded once per file: the `log.file.path`, `host` and `kubernetes` parts
// of every record (tailship's enrich.kubernetes_from_paths: the /var/log/containers link name
// and its /var/log/pods target), and the Kafka `log.file.path` header.

import (
	"os"
	"path/filepath"
	"regexp"
)

var (
	containersRe = regexp.MustCompile(`^(?P<pod>[a-z0-9][a-z0-9.-]*)_(?P<namespace>[a-z0-9][a-z0-9-]*)_` +
		`(?P<container>[a-z0-9][a-z0-9-]*)-(?P<container_id>[0-9a-f]{64})\.log$`)
	podsRe = regexp.MustCompile(`(?:^|/)(?P<namespace>[a-z0-9][a-z0-9-]*)_(?P<pod>[a-z0-9][a-z0-9.-]*)_` +
		`(?P<pod_uid>[0-9a-fA-F-]+)/(?P<container>[a-z0-9][a-z0-9-]*)/\d+\.log(?:\.\S*)?$`)
	k8sOrder = [...]string{"namespace", "pod", "pod_uid", "container", "container_id"}
)

type fileMeta struct {
	path        string
	pathJSON    []byte // "path" as a JSON string
	pathHeader  []byte // the Kafka log.file.path header value
	logHead     []byte // "log":{"file":{"path":...},"offset":
	tail        []byte // ,"host":{"name":...},"kubernetes":{...}}  (ends every record)
	host        string
	hostMembers []byte // "name":"..."
	k8sMembers  []byte // "namespace":"...",...
	k8sKeys     map[string]bool
	ns          string // the namespace label of its records (log metrics)
	hasNS       bool
}

func (m *fileMeta) k8sHas(k string) bool { return m.k8sKeys[k] }

func kubernetesFromPaths(path, real string) map[string]string {
	found := map[string]string{}
	for _, p := range []string{path, real} {
		if p == "" {
			continue
		}
		for _, re := range []*regexp.Regexp{containersRe, podsRe} {
			target := p
			if re == containersRe {
				target = filepath.Base(p)
			}
			m := re.FindStringSubmatch(target)
			if m == nil {
				continue
			}
			for i, name := range re.SubexpNames() {
				if _, ok := found[name]; name != "" && !ok {
					found[name] = m[i]
				}
			}
		}
	}
	return found
}

func hostName() string {
	if n := os.Getenv("NODE_NAME"); n != "" {
		return n
	}
	h, _ := os.Hostname()
	return h
}

var host = hostName()

func newFileMeta(path, real string) *fileMeta {
	m := &fileMeta{path: path, host: host, pathHeader: []byte(path), k8sKeys: map[string]bool{}}
	m.pathJSON = appendJSONString(nil, []byte(path))
	m.logHead = append(append([]byte(`"log":{"file":{"path":`), m.pathJSON...), `},"offset":`...)
	if host != "" {
		m.hostMembers = append([]byte(`"name":`), appendJSONString(nil, []byte(host))...)
		m.tail = append(append([]byte(`,"host":{`), m.hostMembers...), '}')
	}
	k := kubernetesFromPaths(path, real)
	m.ns, m.hasNS = k["namespace"]
	for _, name := range k8sOrder {
		if v, ok := k[name]; ok {
			if len(m.k8sMembers) > 0 {
				m.k8sMembers = append(m.k8sMembers, ',')
			}
			m.k8sMembers = appendJSONString(m.k8sMembers, []byte(name))
			m.k8sMembers = append(m.k8sMembers, ':')
			m.k8sMembers = appendJSONString(m.k8sMembers, []byte(v))
			m.k8sKeys[name] = true
		}
	}
	if len(m.k8sMembers) > 0 {
		m.tail = append(append(append(m.tail, `,"kubernetes":{`...), m.k8sMembers...), '}')
	}
	m.tail = append(m.tail, '}')
	return m
}
