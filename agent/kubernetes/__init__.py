"""Kubernetes metadata from the API server: a node-scoped list + watch of pods and namespaces
(`api`, `reflector`), a cache that keeps deleted pods for a grace period (`cache`), the fields a
pod gives its records and the annotations that steer the agent (`podmeta`), composed by
`service.KubernetesMetadata` for the agent."""
