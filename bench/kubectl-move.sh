#!/usr/bin/env bash
# The KEP-3335 procedure by hand, as a careful operator would type it with kubectl and
# jq: the baseline bench/moves.py times the product against. Not part of the product.
#
#   kubectl-move.sh setup SOURCE DESTINATION NAMESPACE STATEFULSET
#       the destination StatefulSet owning no ordinal yet (start = source replicas),
#       with the Secrets, ConfigMaps, Services and PDBs of the namespace, copied once
#   kubectl-move.sh move SOURCE DESTINATION NAMESPACE STATEFULSET ORDINAL
#       ordinal ORDINAL (the source's highest) from SOURCE to DESTINATION
#
# SOURCE and DESTINATION are contexts of $KUBECONFIG; the source's ordinals start at 0.
# Careful means: no volume is ever left with reclaim policy Delete once its claim can
# go; the claims are released only after pod k is gone from the source and no
# VolumeAttachment of its volumes is left there, so pod k never runs twice and no
# volume is attached to two nodes; the destination is changed by one patch of
# ordinals.start and replicas together. What it leaves out, against the product: no
# health check of either slice before a move, no lock against other writers, no undo,
# no resume after a crash between two steps (run it again by hand from the step).
set -euo pipefail

usage() { sed -n '5,9p' "$0" >&2; exit 2; }
die() { echo "kubectl-move: $*" >&2; exit 1; }
[ $# -ge 5 ] || usage
what=$1 src=$2 dst=$3 ns=$4 sts=$5
S=(kubectl --context "$src" -n "$ns")
D=(kubectl --context "$dst" -n "$ns")
# What the API server sets, dropped before an object is created in the other cluster.
STRIP='del(.metadata.uid, .metadata.resourceVersion, .metadata.creationTimestamp,
  .metadata.managedFields, .metadata.generation, .metadata.ownerReferences, .status)'
# A Service's cluster IP is the source cluster's (a headless Service keeps "None").
NO_IP='if .spec.clusterIP == "None" then . else del(.spec.clusterIP, .spec.clusterIPs) end'

copy() { # KIND NAME...: from the source namespace to the destination's, unchanged
  local kind=$1
  shift
  for name in "$@"; do
    "${S[@]}" get "$kind" "$name" -o json | jq "$STRIP | $NO_IP" | "${D[@]}" create -f - >/dev/null
  done
}

case $what in
setup)
  [ $# -eq 5 ] || usage
  end=$("${S[@]}" get sts "$sts" -o jsonpath='{.spec.replicas}')
  for kind in secret configmap service pdb; do
    # Not the namespace's own: the root CA ConfigMap every namespace gets, token Secrets.
    names=$("${S[@]}" get "$kind" -o json | jq -r '.items[]
      | select(.metadata.name != "kube-root-ca.crt")
      | select(.type != "kubernetes.io/service-account-token") | .metadata.name')
    # shellcheck disable=SC2086 # one name per word
    [ -z "$names" ] || copy "$kind" $names
  done
  "${S[@]}" get sts "$sts" -o json |
    jq "$STRIP | .spec.replicas = 0 | .spec.ordinals.start = $end" |
    "${D[@]}" create -f - >/dev/null
  ;;
move)
  [ $# -eq 6 ] || usage
  k=$6
  pod=$sts-$k
  source=$("${S[@]}" get sts "$sts" -o json)
  destination=$("${D[@]}" get sts "$sts" -o json)
  have=$(jq '.spec.replicas' <<<"$source")
  start=$(jq '.spec.ordinals.start // 0' <<<"$destination")
  replicas=$(jq '.spec.replicas' <<<"$destination")
  end=$((start + replicas))
  # Refuse what would lose a volume or split the ordinals.
  [ "$(jq '.spec.ordinals.start // 0' <<<"$source")" = 0 ] || die "source ordinals must start at 0"
  [ "$have" = $((k + 1)) ] || die "ordinal $k is not the source's highest (it owns [0, $have))"
  [ "$start" = $((k + 1)) ] || die "the destination owns [$start, $end), not from $((k + 1))"
  [ "$(jq -r '.spec.persistentVolumeClaimRetentionPolicy.whenScaled // "Retain"' \
    <<<"$source")" = Retain ] || die "whenScaled is not Retain: scaling down deletes the claims"
  templates=$(jq -r '.spec.volumeClaimTemplates[].metadata.name' <<<"$source")
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  : >"$tmp/volumes"
  # 1. Every volume of k kept when its claim goes.
  for t in $templates; do
    claim=$t-$pod
    "${S[@]}" get pvc "$claim" -o json >"$tmp/$claim.json"
    pv=$(jq -r '.spec.volumeName // empty' "$tmp/$claim.json")
    [ -n "$pv" ] || die "claim $claim is not bound"
    echo "$pv" >>"$tmp/volumes"
    kubectl --context "$src" patch pv "$pv" --type merge \
      -p '{"spec":{"persistentVolumeReclaimPolicy":"Retain"}}' >/dev/null
  done
  # 2. The source gives up k; pod k gone (at the end of its grace period, never forced),
  #    then every VolumeAttachment of its volumes (the node has let them go).
  "${S[@]}" scale sts "$sts" --replicas="$k" >/dev/null
  "${S[@]}" wait --for=delete "pod/$pod" --timeout=300s >/dev/null
  attached=$(kubectl --context "$src" get volumeattachments -o json |
    jq -r --rawfile pvs "$tmp/volumes" '.items[]
      | select(.spec.source.persistentVolumeName as $v | $pvs | split("\n") | index([$v]))
      | "volumeattachment/" + .metadata.name')
  # shellcheck disable=SC2086 # one name per word
  [ -z "$attached" ] || kubectl --context "$src" wait --for=delete $attached --timeout=300s \
    >/dev/null
  # 3. Its claims released (the volumes stay: Retain).
  for t in $templates; do "${S[@]}" delete pvc "$t-$pod" --wait=true >/dev/null; done
  # 4. The volumes in the destination, pre-bound to the claims; once each is Available,
  #    the claims, naming their volumes.
  while read -r pv; do
    kubectl --context "$src" get pv "$pv" -o json |
      jq "$STRIP | del(.metadata.annotations, .spec.claimRef.uid, .spec.claimRef.resourceVersion)" |
      kubectl --context "$dst" create -f - >/dev/null
  done <"$tmp/volumes"
  while read -r pv; do
    kubectl --context "$dst" wait --for=jsonpath='{.status.phase}'=Available "pv/$pv" \
      --timeout=300s >/dev/null
  done <"$tmp/volumes"
  for t in $templates; do
    jq "$STRIP | del(.metadata.annotations)" "$tmp/$t-$pod.json" | "${D[@]}" create -f - >/dev/null
  done
  for t in $templates; do
    "${D[@]}" wait --for=jsonpath='{.status.phase}'=Bound "pvc/$t-$pod" --timeout=300s >/dev/null
  done
  # 5. The destination takes k: start and replicas in one patch; pod k Ready there.
  "${D[@]}" patch sts "$sts" --type merge \
    -p "{\"spec\":{\"ordinals\":{\"start\":$k},\"replicas\":$((end - k))}}" >/dev/null
  "${D[@]}" wait --for=create "pod/$pod" --timeout=300s >/dev/null
  "${D[@]}" wait --for=condition=Ready "pod/$pod" --timeout=300s >/dev/null
  ;;
*) usage ;;
esac
