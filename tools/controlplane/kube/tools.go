//go:build tools

// Package kube pins the Kubernetes commands the cluster tier builds (build.sh): the
// k8s.io/kubernetes module plus its staging modules at the matching v0 tags (go.mod's
// replace list; k8s.io/kubernetes itself requires them at v0.0.0).
package kube

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
