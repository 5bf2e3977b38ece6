#!/usr/bin/env bash
# Regenerates the identity model compiled ahead of time (Sqlite/ and Postgres/) from IdentityDb.OnModelCreating, after
# a change to the identity entities or an EF Core / OpenIddict / Identity upgrade. IdentitySchemaTests fails until this
# has been run. Needs the dotnet-ef tool (installed into a scratch folder here) and network access to NuGet.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
server=$(cd "$here/../.." && pwd)/Ward.Server.csproj
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
dotnet tool install dotnet-ef --version 10.0.15 --tool-path "$scratch/tools" >/dev/null
# A throwaway start-up project with the design-time factory; named "ward" to see Ward.Server's internals (InternalsVisibleTo).
cat >"$scratch/gen.csproj" <<XML
<Project Sdk="Microsoft.NET.Sdk">
  <PropertyGroup>
    <OutputType>Exe</OutputType><AssemblyName>ward</AssemblyName><TargetFramework>net10.0</TargetFramework>
    <Nullable>enable</Nullable><ImplicitUsings>enable</ImplicitUsings><ManagePackageVersionsCentrally>false</ManagePackageVersionsCentrally>
    <NoWarn>NU1603;NU1605</NoWarn>
  </PropertyGroup>
  <ItemGroup>
    <PackageReference Include="Microsoft.EntityFrameworkCore.Design" Version="10.0.5" />
    <ProjectReference Include="$server" />
  </ItemGroup>
</Project>
XML
cat >"$scratch/Factory.cs" <<'CS'
using Microsoft.EntityFrameworkCore;
using Microsoft.EntityFrameworkCore.Design;
using Ward.Server.Identity;

internal sealed class Factory : IDesignTimeDbContextFactory<IdentityDb>
{
    public IdentityDb CreateDbContext(string[] args)
    {
        var options = new DbContextOptionsBuilder<IdentityDb>();
        if (Environment.GetEnvironmentVariable("WARD_MODEL_ENGINE") == "postgres") options.UseNpgsql("Host=localhost");
        else options.UseSqlite("Data Source=:memory:");
        options.UseOpenIddict();
        return new IdentityDb(options.Options);
    }
}
internal static class Program { private static void Main() { } }
CS
dotnet build "$scratch/gen.csproj" -c Debug -v q -nologo >/dev/null
for engine in sqlite postgres; do
    name=$([ $engine = sqlite ] && echo Sqlite || echo Postgres)
    rm -rf "${here:?}/$name"
    WARD_MODEL_ENGINE=$engine "$scratch/tools/dotnet-ef" dbcontext optimize --no-build --configuration Debug \
        --project "$server" --startup-project "$scratch/gen.csproj" --context IdentityDb \
        --output-dir "$here/$name" --namespace "Ward.Server.Identity.${name}Model" >/dev/null
    # Both models live in one assembly: IdentityDb.Configure chooses one per engine (UseModel) instead of the attribute.
    rm "$here/$name/IdentityDbAssemblyAttributes.cs"
done
echo "Regenerated $here/Sqlite and $here/Postgres."
