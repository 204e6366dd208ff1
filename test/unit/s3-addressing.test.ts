import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { usePathStyle } from '../../src/storage/s3-addressing';

describe('S3 addressing as the Go ncps (minio-go) chooses it', () => {
  it('puts the bucket in the path for self-hosted endpoints', () => {
    for (const endpoint of ['http://minio:9000', 'http://127.0.0.1:9000', 'https://garage.example.org', 'http://garage:3900', 'https://s3.example.com', 'https://ceph.internal/', 'localhost:9000']) {
      assert.equal(usePathStyle(endpoint, 'ncps', false), true, endpoint);
    }
  });

  it('puts the bucket in the host name for Amazon S3, Google Cloud Storage and Alibaba OSS', () => {
    for (const endpoint of [
      'https://s3.amazonaws.com',
      'https://s3.us-west-2.amazonaws.com',
      'https://s3-eu-west-1.amazonaws.com',
      'https://s3.dualstack.eu-central-1.amazonaws.com',
      'https://s3-fips.us-gov-west-1.amazonaws.com',
      'https://s3.cn-north-1.amazonaws.com.cn',
      'https://storage.googleapis.com',
      'https://oss-cn-hangzhou.aliyuncs.com',
    ]) {
      assert.equal(usePathStyle(endpoint, 'ncps', false), false, endpoint);
    }
    assert.equal(usePathStyle(undefined, 'ncps', false), false, 'no endpoint: AWS through the SDK');
  });

  it('keeps dotted bucket names in the path over https, and obeys force-path-style', () => {
    assert.equal(usePathStyle('https://s3.amazonaws.com', 'my.bucket', false), true);
    assert.equal(usePathStyle('http://s3.amazonaws.com', 'my.bucket', false), false);
    assert.equal(usePathStyle('https://s3.amazonaws.com', 'ncps', true), true);
    assert.equal(usePathStyle(undefined, 'ncps', true), true);
    assert.equal(usePathStyle('https://bucket.s3.example.amazonaws.com.evil.org', 'ncps', false), true, 'only real AWS host names');
  });
});
