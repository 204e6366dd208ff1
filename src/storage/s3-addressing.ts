// How the bucket is addressed, chosen as the Go ncps chooses it for the same endpoint (minio-go's
// automatic lookup): in the host name (`https://BUCKET.s3.amazonaws.com/key`) only for the object
// stores known to serve that — Amazon S3's own endpoints, Google Cloud Storage and Alibaba OSS —
// and in the path (`http://minio:9000/BUCKET/key`) for every other endpoint (MinIO, Garage, Ceph,
// SeaweedFS, …), which is what self-hosted servers answer. `--cache-storage-s3-force-path-style`
// forces the path form everywhere. With no endpoint at all the AWS SDK talks to AWS itself.

/** Amazon S3 host names: s3.amazonaws.com, s3.<region>…, s3-<region>…, dualstack, FIPS, China. */
const AMAZON_S3_HOST = /^(?:s3|s3-external-1|s3[.-][a-z0-9-]+|s3\.dualstack\.[a-z0-9-]+|s3-fips(?:\.dualstack)?\.[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?$/;

function isVirtualHostProvider(host: string): boolean {
  return AMAZON_S3_HOST.test(host) || host === 'storage.googleapis.com' || host.endsWith('aliyuncs.com');
}

/**
 * Whether requests to `endpoint` for `bucket` put the bucket in the path. `endpoint` is a URL with
 * a scheme (an endpoint without one is taken as https, as the Go ncps takes it).
 */
export function usePathStyle(endpoint: string | undefined, bucket: string, forcePathStyle: boolean): boolean {
  if (forcePathStyle) return true;
  if (!endpoint) return false; // AWS itself, through the SDK's own endpoint resolution
  let url: URL;
  try {
    url = new URL(/^[a-z][a-z0-9+.-]*:\/\//i.test(endpoint) ? endpoint : `https://${endpoint}`);
  } catch {
    return true;
  }
  // A dot in the bucket name breaks TLS certificates of the host-name form (minio-go's rule too).
  if (url.protocol === 'https:' && bucket.includes('.')) return true;
  return !isVirtualHostProvider(url.hostname.toLowerCase());
}
